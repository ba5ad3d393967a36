from __future__ import annotations

from django.urls import include, path

from guard import views

app_name = "guard"

device_urls = [
    path("", views.devices, name="devices"),
    path("export.<str:fmt>", views.devices_export, name="devices_export"),
    path("act/", views.devices_act, name="devices_act"),
    path("<int:pk>/", views.device_detail, name="device_detail"),
    path("<int:pk>/act/", views.device_act, name="device_act"),
]

bulk_urls = [
    path("", views.bulk_new, name="bulk_new"),
    path("<int:pk>/", views.bulk_detail, name="bulk_detail"),
    path("<int:pk>/confirm/", views.bulk_confirm, name="bulk_confirm"),
    path("<int:pk>/problems.xlsx", views.bulk_problems, name="bulk_problems"),
]

job_urls = [
    path("<int:pk>/", views.job, name="job"),
    path("<int:pk>/retry/", views.job_retry, name="job_retry"),
    path("<int:pk>/results/refresh/", views.job_refresh_results, name="job_refresh_results"),
    path("<int:pk>/report.xlsx", views.job_report, name="job_report"),
]

upload_urls = [
    path("", views.uploads, name="uploads"),
    path("new/", views.upload_new, name="upload_new"),
    path("knox/", views.uploads_from_knox, name="uploads_from_knox"),
]

urlpatterns = [
    path("", views.index, name="index"),
    path("sync/<int:account_pk>/", views.sync, name="sync"),
    path("sync/schedule/", views.schedule, name="schedule"),
    path("sync/schedule/<int:pk>/delete/", views.unschedule, name="unschedule"),
    path("devices/", include(device_urls)),
    path("bulk/", include(bulk_urls)),
    path("jobs/", include(job_urls)),
    path("uploads/", include(upload_urls)),
    path("licences/", views.licences, name="licences"),
]
