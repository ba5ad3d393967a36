from __future__ import annotations

from django.urls import include, path

from efota import views

app_name = "efota"

group_urls = [
    path("", views.groups, name="groups"),
    path("register/", views.group_register, name="group_register"),
    path("<int:pk>/licence/", views.group_license_change, name="group_license_change"),
]

job_urls = [
    path("<int:pk>/", views.job, name="job"),
    path("<int:pk>/status/", views.job_status, name="job_status"),
    path("<int:pk>/refresh/", views.job_refresh, name="job_refresh"),
]

urlpatterns = [
    path("", views.index, name="index"),
    path("groups/", include(group_urls)),
    path("licences/", views.licences, name="licences"),
    path("firmware/", views.firmware, name="firmware"),
    path("abnormal/", views.abnormal, name="abnormal"),
    path("force-updates/new/", views.force_update, name="force_update"),
    path("jobs/", include(job_urls)),
]
