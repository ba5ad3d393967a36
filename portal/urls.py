from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_not_required
from django.urls import include, path

from portal import views
from portal.throttle import ThrottledLoginView

job_urls = [
    path("", views.jobs, name="jobs"),
    path("<int:pk>/", views.job_detail, name="job_detail"),
    path("<int:pk>/progress/", views.job_progress, name="job_progress"),
    path("<int:pk>/result/", views.lookup_result, name="lookup_result"),
    path("<int:pk>/cancel/", views.job_cancel, name="job_cancel"),
]

account_urls = [
    path("", views.accounts, name="accounts"),
    path("new/", views.account_create, name="account_create"),
    path("<int:pk>/", views.account_detail, name="account_detail"),
    path("<int:pk>/edit/", views.account_edit, name="account_edit"),
    path("<int:pk>/keys/", views.account_keys, name="account_keys"),
    path("<int:pk>/test/", views.account_test, name="account_test"),
]

portal_patterns = [
    path("", views.dashboard, name="dashboard"),
    path("jobs/", include(job_urls)),
    path("audit/", views.audit, name="audit"),
    path("settings/", views.my_settings, name="my_settings"),
    path("uploads/<int:pk>/rows/<int:row>/use-suggestion/", views.upload_row_fix, name="upload_row_fix"),
    path("accounts/", include(account_urls)),
]

urlpatterns = [
    path("", include((portal_patterns, "portal"))),
    path("kdp/", include("kdp.urls")),
    path("guard/", include("guard.urls")),
    path("efota/", include("efota.urls")),
    path("login/", login_not_required(ThrottledLoginView.as_view()), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("healthz", views.healthz, name="healthz"),
    path("admin/", admin.site.urls),
]
