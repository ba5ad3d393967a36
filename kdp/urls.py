from __future__ import annotations

from django.urls import include, path

from kdp import views

app_name = "kdp"

upload_urls = [
    path("", views.upload, name="upload"),
    path("template.xlsx", views.template, {"fmt": "xlsx"}, name="template_xlsx"),
    path("template.csv", views.template, {"fmt": "csv"}, name="template_csv"),
    path("<int:pk>/", views.upload_detail, name="upload_detail"),
    path("<int:pk>/restage/", views.upload_restage, name="upload_restage"),
    path("<int:pk>/confirm/", views.upload_confirm, name="upload_confirm"),
    path("<int:pk>/problems.xlsx", views.upload_invalid_xlsx, name="upload_invalid_xlsx"),
]

job_urls = [
    path("<int:pk>/", views.job, name="job"),
    path("<int:pk>/retry/", views.job_retry, name="job_retry"),
    path("<int:pk>/report.xlsx", views.job_report, name="job_report"),
]

device_urls = [
    path("", views.devices, name="devices"),
    path("export.<str:fmt>", views.devices_export, name="devices_export"),
    path("delete/", views.devices_delete, name="devices_delete"),
    # The device list links each row as <devices>/<pk>/ without a reverse() per row (templates/kdp/devices.html).
    path("<int:pk>/", views.device_detail, name="device_detail"),
]

urlpatterns = [
    path("", views.index, name="index"),
    path("uploads/", include(upload_urls)),
    path("aliases/", views.aliases, name="aliases"),
    path("jobs/", include(job_urls)),
    path("devices/", include(device_urls)),
    path("customers/", views.customers, name="customers"),
    path("customers/<int:account_pk>/refresh/", views.customers_refresh, name="customers_refresh"),
    path("transactions/", views.transactions, name="transactions"),
    path("transactions/<int:pk>/", views.transaction_detail, name="transaction_detail"),
    path("reconcile/", views.reconcile, name="reconcile"),
    path("reconcile/run/", views.reconcile_run, name="reconcile_run"),
    path("reconcile/jobs/<int:pk>/", views.reconcile_job, name="reconcile_job"),
    path("reconcile/schedule/", views.reconcile_schedule, name="reconcile_schedule"),
    path("reconcile/schedule/<int:pk>/delete/", views.reconcile_unschedule, name="reconcile_unschedule"),
]
