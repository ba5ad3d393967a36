from __future__ import annotations

from django.urls import path

from efota import views

app_name = "efota"

urlpatterns = [
    path("", views.index, name="index"),
]
