from __future__ import annotations

import time
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

# No inline scripts anywhere: htmx is a static file and behaviour lives in static/js. Inline style attributes
# are allowed because the Django admin uses them.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "font-src 'self'; connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'self'; "
    "object-src 'none'"
)


class SecurityHeadersMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        response.headers.setdefault("Permissions-Policy", "camera=(), microphone=(), geolocation=(), payment=()")
        return response


# How long a user's permission set is reused from their session before it is read again from the database.
# Role changes therefore reach an already logged-in user within this many seconds.
PERMISSION_CACHE_SECONDS = 60


class PermissionCacheMiddleware:
    """Keep the logged-in user's permission set in their session.

    Django's ModelBackend reads permissions with two queries on every request that checks one. Pages polled every
    two seconds (job progress) check a permission on each poll; with the set in the session, which is loaded
    anyway, such a poll costs three queries in all: session, user, the job.
    """

    KEY = "_portal_perms"

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        user = request.user
        if user.is_authenticated and user.is_active:
            cached = request.session.get(self.KEY)
            now = time.time()
            if cached and cached.get("user") == user.pk and now - cached.get("at", 0) < PERMISSION_CACHE_SECONDS:
                user._perm_cache = set(cached["perms"])  # type: ignore[union-attr]  # ModelBackend's own cache attribute
            else:
                perms = sorted(user.get_all_permissions())
                request.session[self.KEY] = {"user": user.pk, "at": now, "perms": perms}
        return self.get_response(request)
