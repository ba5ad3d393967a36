"""Dashboard panels contributed by the service apps.

portal may not import kdp, guard or efota (dependencies flow toward portal), so each app registers the dotted
path of a `panel(request) -> str` function in its AppConfig.ready(), and the dashboard renders them in order.
"""

from __future__ import annotations

from django.http import HttpRequest
from django.utils.module_loading import import_string
from django.utils.safestring import SafeString, mark_safe

PANELS: list[str] = []


def register(path: str) -> None:
    if path not in PANELS:
        PANELS.append(path)


def render_panels(request: HttpRequest) -> list[SafeString]:
    # Each panel renders a template with autoescaping, so its output is safe HTML.
    return [mark_safe(import_string(path)(request)) for path in PANELS]  # noqa: S308
