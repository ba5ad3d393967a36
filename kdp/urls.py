from __future__ import annotations

from django.urls import path

from kdp import views

app_name = "kdp"

urlpatterns = [
    path("", views.index, name="index"),
]
