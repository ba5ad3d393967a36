from __future__ import annotations

import time
from collections.abc import Callable

from django.conf import settings
from django.contrib.auth import logout
from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse

from portal import useraudit

# No inline scripts anywhere: htmx is a static file and behaviour lives in static/js. Inline style attributes
# are allowed because the Django admin uses them.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "font-src 'self'; connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'self'; "
    "object-src 'none'"
)


class AuditActorMiddleware:
    """Names the signed-in user (and the request's IP) as the author of every change to a user, group or
    permission made while serving the request (portal/useraudit.py). Without a request, in a shell or a
    management command, the author is "system"."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        with useraudit.acting(request):
            return self.get_response(request)


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


# Where the time of sign-in is kept in the session (set by portal.signals on login).
LOGIN_AT_KEY = "_portal_login_at"


class LoginLifetimeMiddleware:
    """A login lasts SESSION_COOKIE_AGE seconds from sign-in, however active the user is.

    Django's session expiry slides forward whenever the session is written (the permission cache writes it every
    minute), so on its own it is an idle timeout. This sets the hard limit: past it the user is signed out and
    sent to the login page (htmx requests get an HX-Redirect, so a polling page does not swap in a login form).
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.user.is_authenticated:
            login_at = request.session.get(LOGIN_AT_KEY)
            now = time.time()
            if login_at is None:
                request.session[LOGIN_AT_KEY] = now  # sessions from before this rule: count from now
            elif now - login_at > settings.SESSION_COOKIE_AGE:
                logout(request)
                login = redirect_to_login(request.get_full_path())
                if request.headers.get("HX-Request"):
                    return HttpResponse(status=204, headers={"HX-Redirect": login["Location"]})
                return login
        return self.get_response(request)
