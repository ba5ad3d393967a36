from __future__ import annotations

from django.urls import path

from guard import views

app_name = "guard"

urlpatterns = [
    path("", views.index, name="index"),
]
