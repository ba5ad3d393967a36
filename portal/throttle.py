"""Login throttling for the portal's login page and the admin's.

After `LOGIN_THROTTLE_FAILURES` failed logins for one username (compared case-insensitively), or `IP_FAILURES`
from one client address, within `LOGIN_THROTTLE_WINDOW` seconds of the first of them, further attempts for that
username or from that address are refused until the window ends, without checking the password: guessing on
during a lockout learns nothing, not even that a guess was right. A successful login clears the username's count
(not the address's: one valid account must not reset an address that is guessing at others).

Counts live in the Django cache, so every web process shares them (database cache, or Redis with `REDIS_URL`).
Lockouts are audited (`auth.login_locked` when one starts, `auth.login_refused` for each attempt it refuses);
the failures themselves are audited by portal.signals as `auth.login_failed`.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.forms import AuthenticationForm
from django.contrib.auth.views import LoginView
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse

from portal.models import AuditEvent
from portal.net import client_ip

# Failures from one client address before the address is locked out, whatever usernames it tries. Higher than the
# per-username limit because colleagues behind one office NAT share an address.
IP_FAILURES = 20
KEY_PREFIX = "login-throttle"


@dataclass(frozen=True)
class Lockout:
    scope: str  # "username" or "ip"
    failures: int
    seconds_left: int

    @property
    def minutes_left(self) -> int:
        return max(1, math.ceil(self.seconds_left / 60))

    def message(self) -> str:
        when = f"{self.minutes_left} minute{'' if self.minutes_left == 1 else 's'}"
        if self.scope == "username":
            return (
                f"Too many failed sign-in attempts for this account. Try again in {when} "
                "or ask an administrator to reset it."
            )
        return f"Too many failed sign-in attempts from your network address. Try again in {when}."


def _username_key(username: str) -> str:
    # Hashed: usernames may hold characters that are not valid in every cache backend's keys.
    return f"{KEY_PREFIX}:user:{hashlib.sha256(username.strip().lower().encode()).hexdigest()[:32]}"


def _counters(request: HttpRequest | None, username: str) -> list[tuple[str, str, int]]:
    """(scope, cache key, limit) of every counter an attempt for `username` from `request` touches."""
    limit = settings.LOGIN_THROTTLE_FAILURES
    if limit <= 0:
        return []
    counters = []
    if username:
        counters.append(("username", _username_key(username), limit))
    ip = client_ip(request)
    if ip:
        counters.append(("ip", f"{KEY_PREFIX}:ip:{ip}", IP_FAILURES))
    return counters


def lockout(request: HttpRequest | None, username: str) -> Lockout | None:
    """The lockout that refuses an attempt for `username` from `request`'s address, if any (username first)."""
    counters = _counters(request, username)
    if not counters:
        return None
    values = cache.get_many([k for _, key, _ in counters for k in (key, f"{key}:until")])
    now = time.time()
    for scope, key, limit in counters:
        failures = values.get(key) or 0
        if failures >= limit:
            until = values.get(f"{key}:until") or now + settings.LOGIN_THROTTLE_WINDOW
            return Lockout(scope, failures, max(1, math.ceil(until - now)))
    return None


def record_failure(request: HttpRequest | None, username: str) -> None:
    """Count one failed login against the username and the client address."""
    window = settings.LOGIN_THROTTLE_WINDOW
    for _, key, _ in _counters(request, username):
        now = time.time()
        # The window starts at the first failure and does not move with later ones.
        cache.add(f"{key}:until", now + window, window)
        if not cache.add(key, 1, window):
            try:
                cache.incr(key)
            except ValueError:  # expired between add() and incr()
                cache.set(key, 1, window)
        # The database cache's incr() writes the entry back with the default timeout (5 minutes), which would cut
        # the window short or stretch it: pin the count's expiry to the window's end again.
        until = cache.get(f"{key}:until") or now + window
        cache.touch(key, max(1, math.ceil(until - now)))


def reset_username(username: str) -> None:
    """Clear a username's failures: after a successful login, or to lift a lockout (`manage.py unlock_login NAME`)."""
    key = _username_key(username)
    cache.delete_many([key, f"{key}:until"])


class ThrottledFormMixin:
    """Refuses locked-out attempts before authenticating, counts failures, clears the username's count on
    success. `throttled` holds the Lockout that refused the attempt, for the view's status code."""

    request: HttpRequest | None
    cleaned_data: dict[str, Any]
    throttled: Lockout | None = None

    def clean(self) -> dict[str, Any]:
        username = self.cleaned_data.get("username") or ""
        locked = lockout(self.request, username)
        if locked is not None:
            self._refuse(locked, username, "auth.login_refused")
        try:
            cleaned: dict[str, Any] = super().clean()  # type: ignore[misc]  # AuthenticationForm.clean
        except ValidationError:
            # Count only a wrong username or password: a correct password refused for another reason (an admin
            # login by a non-staff user) is not a guess.
            if username and self.cleaned_data.get("password") and self.get_user() is None:  # type: ignore[attr-defined]
                record_failure(self.request, username)
                locked = lockout(self.request, username)
                if locked is not None:
                    self._refuse(locked, username, "auth.login_locked")
            raise
        if username:
            reset_username(username)
        return cleaned

    def _refuse(self, locked: Lockout, username: str, action: str) -> None:
        self.throttled = locked
        AuditEvent.objects.record(
            action,
            request=self.request,
            summary={
                "username": username[:150],
                "scope": locked.scope,
                "failures": locked.failures,
                "minutes_left": locked.minutes_left,
            },
        )
        raise ValidationError(locked.message(), code="throttled")


class ThrottledAuthenticationForm(ThrottledFormMixin, AuthenticationForm):
    """The portal's login form, throttled."""


class ThrottledAdminAuthenticationForm(ThrottledFormMixin, AdminAuthenticationForm):
    """The admin's login form (admin.site.login_form), throttled by the same counters."""


class ThrottledLoginView(LoginView):
    """The portal's login page: answers a refused attempt with 429 and Retry-After."""

    authentication_form = ThrottledAuthenticationForm
    redirect_authenticated_user = True

    def form_invalid(self, form: Any) -> HttpResponse:
        response = super().form_invalid(form)
        locked = getattr(form, "throttled", None)
        if locked is not None:
            response.status_code = 429
            response["Retry-After"] = str(locked.seconds_left)
        return response
