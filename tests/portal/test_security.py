"""Access control and secrets: login throttling, session lifetime, password rules, CSRF on every POST, security
headers, and Knox secrets that never reach a page, a log line, the audit log or an error report.

`manage.py check --deploy` with production settings is tested in tests/portal/test_settings.py
(test_check_deploy_passes_without_warnings_in_production); here only what it cannot see: the HSTS header itself.
"""

from __future__ import annotations

import base64
import io
import logging
import re
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import timedelta
from unittest import mock

import pytest
import responses
from cryptography.hazmat.primitives import serialization
from django.conf import settings
from django.contrib.auth import password_validation
from django.contrib.auth.models import AnonymousUser, User
from django.contrib.sessions.models import Session
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.signals import got_request_exception
from django.db import connection
from django.test import Client, RequestFactory, override_settings
from django.utils import timezone
from django.views.debug import ExceptionReporter, technical_500_response
from django_q.models import Schedule

from portal import throttle
from portal.models import AuditEvent, Job, KnoxAccount, Upload
from tests.base import PASSWORD, BaseTestCase
from tests.keys import keys_dict, keys_json
from tests.portal.helpers import OUR_NAMESPACES, PRODUCTION, build_world, manage

LOCKED = (
    "Too many failed sign-in attempts for this account. Try again in 15 minutes or ask an administrator to reset it."
)
IP_LOCKED = "Too many failed sign-in attempts from your network address."
INVALID = "Please enter a correct username and password."
LOCMEM = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "throttle-tests"}}


# --- login throttling ---------------------------------------------------------------------------------------


@override_settings(LOGIN_THROTTLE_FAILURES=5, LOGIN_THROTTLE_WINDOW=900)  # the defaults, whatever the environment says
class LoginThrottleTestCase(BaseTestCase):
    def login(self, username: str, password: str, **extra: str):
        return self.client.post("/login/", {"username": username, "password": password}, **extra)

    def fail(self, username: str, times: int, **extra: str) -> None:
        for _ in range(times):
            self.login(username, "wrong password", **extra)

    def assert_logged_out(self) -> None:
        assert "_auth_user_id" not in self.client.session
        assert self.client.get("/").status_code == 302

    def test_it_locks_an_account_after_five_failures_whatever_the_case(self):
        for _ in range(4):
            self.assertContains(self.login("victor", "wrong password"), INVALID)
        r = self.login("VICTOR", "wrong password")
        self.assertContains(r, LOCKED, status_code=429)
        assert r["Retry-After"] == "900"
        self.assertContains(self.login("Victor", "another guess"), LOCKED, status_code=429)

    def test_the_right_password_is_refused_during_a_lockout_without_being_checked(self):
        self.fail("victor", 5)
        r = self.login("victor", PASSWORD)
        self.assertContains(r, LOCKED, status_code=429)
        self.assert_logged_out()
        # The password was not tried: no failure (and no login) was reported by Django's authentication.
        assert AuditEvent.objects.filter(action="auth.login_failed").count() == 5
        assert not AuditEvent.objects.filter(action="auth.login").exists()

    def test_the_lockout_ends_with_the_window_on_the_database_cache_and_local_memory(self):
        for caches in (settings.CACHES, LOCMEM):
            with self.settings(CACHES=caches, LOGIN_THROTTLE_WINDOW=2):
                self.fail("victor", 5)
                r = self.login("victor", PASSWORD)
                self.assertContains(r, "Try again in 1 minute or", status_code=429)
                time.sleep(2.1)
                assert self.login("victor", PASSWORD).status_code == 302, caches
                self.client.logout()

    def test_other_accounts_are_unaffected(self):
        self.fail("victor", 6)
        assert self.login("olivia", PASSWORD).status_code == 302

    def test_twenty_failures_from_one_address_lock_the_address(self):
        office = {"REMOTE_ADDR": "198.51.100.7"}
        for i in range(19):
            self.assertContains(self.login(f"nobody{i % 5}", "guess", **office), INVALID)  # 4 per username at most
        self.assertContains(self.login("nobody4", "guess", **office), IP_LOCKED, status_code=429)
        self.assertContains(self.login("olivia", PASSWORD, **office), IP_LOCKED, status_code=429)
        self.assert_logged_out()
        assert self.login("olivia", PASSWORD, REMOTE_ADDR="198.51.100.8").status_code == 302

    def test_x_forwarded_for_is_the_address_only_when_trusted(self):
        via_proxy = {"REMOTE_ADDR": "10.0.0.1"}
        with self.settings(AUDIT_TRUST_X_FORWARDED_FOR=True):
            for i in range(20):
                # The client chose the first entry; our proxy appended the address it really came from.
                self.login(f"nobody{i % 5}", "guess", HTTP_X_FORWARDED_FOR=f"192.0.2.{i}, 203.0.113.9", **via_proxy)
            r = self.login("olivia", PASSWORD, HTTP_X_FORWARDED_FOR="203.0.113.9", **via_proxy)
            self.assertContains(r, IP_LOCKED, status_code=429)
            assert AuditEvent.objects.filter(action="auth.login_locked").get().ip == "203.0.113.9"
            assert self.login("olivia", PASSWORD, HTTP_X_FORWARDED_FOR="203.0.113.10", **via_proxy).status_code == 302
        self.client.logout()
        # Untrusted, the header is ignored and the proxy's own address is the one counted (and locked).
        for i in range(20):
            self.login(f"other{i % 5}", "guess", HTTP_X_FORWARDED_FOR=f"192.0.2.{i}", **via_proxy)
        self.assertContains(self.login("olivia", PASSWORD, **via_proxy), IP_LOCKED, status_code=429)

    def test_it_takes_the_client_address_by_the_audit_logs_rule(self):
        for trusted in (False, True):
            with self.settings(AUDIT_TRUST_X_FORWARDED_FOR=trusted):
                request = RequestFactory().post("/login/", REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR="203.0.113.9")
                request.user = AnonymousUser()
                assert throttle.client_ip(request) == AuditEvent.objects.record("test", request=request).ip

    def test_an_administrator_lifts_a_lockout_from_the_command_line(self):
        from django.core.management import call_command

        self.fail("victor", 5)
        self.assertContains(self.login("victor", PASSWORD), "Too many failed sign-in attempts", status_code=429)
        call_command("unlock_login", "VICTOR", stdout=io.StringIO())  # usernames are counted case-insensitively
        assert self.login("victor", PASSWORD).status_code == 302
        assert AuditEvent.objects.filter(action="auth.login_unlocked").exists()

    def test_a_successful_login_clears_the_accounts_count(self):
        self.fail("victor", 4)
        assert self.login("victor", PASSWORD).status_code == 302
        self.client.logout()
        self.fail("victor", 4)
        assert self.login("victor", PASSWORD).status_code == 302

    def test_lockouts_and_refused_attempts_are_audited(self):
        self.fail("victor", 5)
        self.login("victor", PASSWORD)
        locked = AuditEvent.objects.get(action="auth.login_locked")
        assert locked.summary == {"username": "victor", "scope": "username", "failures": 5, "minutes_left": 15}
        assert locked.ip == "127.0.0.1" and locked.actor is None
        refused = AuditEvent.objects.get(action="auth.login_refused")
        assert refused.summary["username"] == "victor" and refused.summary["scope"] == "username"
        assert PASSWORD not in str(list(AuditEvent.objects.values()))

    def test_the_admin_login_is_throttled_by_the_same_counts(self):
        for _ in range(5):
            self.client.post("/admin/login/", {"username": "alice", "password": "wrong", "next": "/admin/"})
        r = self.client.post("/admin/login/", {"username": "alice", "password": PASSWORD, "next": "/admin/"})
        self.assertContains(r, LOCKED)
        assert self.client.get("/admin/").status_code == 302
        self.assertContains(self.login("alice", PASSWORD), LOCKED, status_code=429)

    def test_a_right_password_refused_by_the_admin_for_non_staff_is_not_a_failure(self):
        for _ in range(6):
            self.client.post("/admin/login/", {"username": "victor", "password": PASSWORD, "next": "/admin/"})
        assert self.login("victor", PASSWORD).status_code == 302

    def test_zero_failures_turns_throttling_off(self):
        with self.settings(LOGIN_THROTTLE_FAILURES=0):
            self.fail("victor", 25)
            assert self.login("victor", PASSWORD).status_code == 302


# --- sessions and passwords ---------------------------------------------------------------------------------


class SessionTestCase(BaseTestCase):
    def login(self):
        r = self.client.post("/login/", {"username": "victor", "password": PASSWORD})
        assert r.status_code == 302
        return r

    def test_a_login_lasts_session_cookie_age_and_no_longer(self):
        with self.settings(SESSION_COOKIE_AGE=600):
            self.login()
            key = self.client.session.session_key
            expires_in = (Session.objects.get(session_key=key).expire_date - timezone.now()).total_seconds()
            assert 590 < expires_in <= 600
            assert self.client.get("/").status_code == 200
            # The age runs out.
            Session.objects.filter(session_key=key).update(expire_date=timezone.now() - timedelta(seconds=1))
            r = self.client.get("/")
        assert r.status_code == 302 and r["Location"].startswith("/login/")

    def test_an_active_user_is_still_signed_out_when_the_login_age_is_reached(self):
        """The session's own expiry slides with every write (the permission cache writes it each minute); the
        login's age does not."""
        from portal.middleware import LOGIN_AT_KEY

        with self.settings(SESSION_COOKIE_AGE=600):
            self.login()
            session = self.client.session
            session[LOGIN_AT_KEY] -= 599  # signed in almost ten minutes ago, active ever since
            session.save()
            assert self.client.get("/").status_code == 200
            session = self.client.session
            session[LOGIN_AT_KEY] -= 2
            session.save()
            r = self.client.get("/", headers={"HX-Request": "true"})
            assert r.status_code == 204 and r["HX-Redirect"].startswith("/login/")
            assert "_auth_user_id" not in self.client.session
            r = self.client.get("/")
        assert r.status_code == 302 and r["Location"].startswith("/login/")
        assert AuditEvent.objects.filter(action="auth.logout").exists()

    def test_the_session_cookie_ends_with_the_browser(self):
        assert settings.SESSION_EXPIRE_AT_BROWSER_CLOSE is True
        cookie = self.login().cookies[settings.SESSION_COOKIE_NAME]
        assert cookie["expires"] == "" and cookie["max-age"] == ""  # no lifetime: a browser-session cookie
        assert cookie["httponly"] is True
        assert self.client.session.get_expire_at_browser_close()

    def test_logout_invalidates_the_session(self):
        self.login()
        key = self.client.session.session_key
        assert self.client.get("/logout/").status_code == 405  # POST only, so a link cannot log anyone out
        self.client.post("/logout/")
        assert not Session.objects.filter(session_key=key).exists()
        self.client.cookies[settings.SESSION_COOKIE_NAME] = key  # replaying the old cookie
        r = self.client.get("/")
        assert r.status_code == 302 and r["Location"].startswith("/login/")


class PasswordRulesTestCase(BaseTestCase):
    WEAK = {
        "password1": "password_too_common",
        "8371946205": "password_entirely_numeric",
        "Xq7!pz": "password_too_short",
        "Victoria.Lindqvist": "password_too_similar",
    }

    def test_validate_password_refuses_weak_passwords(self):
        user = User(username="vlindqvist", first_name="Victoria", last_name="Lindqvist", email="victoria@example.org")
        for password, code in self.WEAK.items():
            with pytest.raises(ValidationError) as e:
                password_validation.validate_password(password, user)
            assert code in [error.code for error in e.value.error_list], password
        password_validation.validate_password("plum-Rivet-9-quartz", user)

    def test_the_admin_refuses_a_weak_password_for_a_new_user(self):
        self.client.force_login(self.admin)
        for password in ("password1", "8371946205", "Xq7!pz", "newbie2024"):
            data = {"username": "newbie2024", "password1": password, "password2": password, "usable_password": "true"}
            r = self.client.post("/admin/auth/user/add/", data)
            assert r.status_code == 200, password
            assert r.context["adminform"].form.errors.get("password2"), password
        assert not User.objects.filter(username="newbie2024").exists()
        strong = "plum-Rivet-9-quartz"
        data = {"username": "newbie2024", "password1": strong, "password2": strong, "usable_password": "true"}
        assert self.client.post("/admin/auth/user/add/", data).status_code == 302
        assert User.objects.get(username="newbie2024").check_password(strong)


# --- CSRF and headers ---------------------------------------------------------------------------------------


class CsrfTestCase(BaseTestCase):
    def state(self) -> tuple[int, ...]:
        return (
            Job.objects.count(),
            AuditEvent.objects.count(),
            KnoxAccount.objects.count(),
            Upload.objects.count(),
            Schedule.objects.count(),
            User.objects.count(),
        )

    @responses.activate  # any call to Knox would be recorded (and refused)
    def test_every_post_without_a_token_is_refused(self):
        world = build_world()
        client = Client(enforce_csrf_checks=True)
        client.force_login(self.admin)
        before = self.state()
        wrong, ours = [], set()
        for url, name, _ in world.urls():
            r = client.post(url, {"name": "x", "confirm": "LOCK"})
            if r.status_code != 403:
                wrong.append((url, name, r.status_code))
            if name.split(":")[0] in OUR_NAMESPACES:
                ours.add(name)
        assert wrong == []
        assert len(ours) > 60  # every portal, KDP, Knox Guard and E-FOTA route was tried
        assert self.state() == before and len(responses.calls) == 0
        assert client.get("/").status_code == 200  # the POST to /logout/ did not log out either

        anonymous = Client(enforce_csrf_checks=True)
        r = anonymous.post("/login/", {"username": "victor", "password": PASSWORD})
        assert r.status_code == 403 and "_auth_user_id" not in anonymous.session
        assert self.state() == before

        # The same POST with the token gets through.
        token = client.get(f"/accounts/{world.account.pk}/").cookies["csrftoken"].value
        r = client.post(f"/jobs/{world.job.pk}/cancel/", headers={"X-CSRFToken": token})
        assert r.status_code == 302
        world.job.refresh_from_db()
        assert world.job.status == Job.Status.CANCELLED


def csp(response) -> dict[str, list[str]]:
    directives = {}
    for part in response["Content-Security-Policy"].split(";"):
        name, *values = part.split()
        directives[name] = values
    return directives


class SecurityHeadersTestCase(BaseTestCase):
    def test_pages_send_the_security_headers(self):
        logged_in = Client()
        logged_in.force_login(self.admin)
        pages = {
            "/login/": Client().get("/login/"),
            "/admin/login/": Client().get("/admin/login/"),
            "/": logged_in.get("/"),
            "/accounts/": logged_in.get("/accounts/"),
            "/admin/portal/knoxaccount/": logged_in.get("/admin/portal/knoxaccount/"),
        }
        for url, r in pages.items():
            assert r.status_code == 200, url
            policy = csp(r)
            script_src = policy.get("script-src", policy["default-src"])
            assert script_src == ["'self'"], url
            assert not [v for values in policy.values() for v in values if v in ("'unsafe-eval'", "*")], url
            assert policy["frame-ancestors"] == ["'none'"] and policy["object-src"] == ["'none'"], url
            assert r["X-Frame-Options"] == "DENY", url
            assert r["Referrer-Policy"] == "same-origin", url
            assert r["X-Content-Type-Options"] == "nosniff", url
            html = r.content.decode()
            # With script-src 'self', inline scripts and event handler attributes would not run: there are none.
            assert re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", html) == [], url
            assert re.findall(r"<[^>]+\son[a-z]+\s*=", html) == [], url


def test_production_settings_send_hsts_and_redirect_to_https(tmp_path):
    code = (
        "from django.test import Client; c = Client(headers={'host': 'portal.example.com'}); "
        "s = c.get('/', secure=True); p = c.get('/'); "
        "print(s.status_code, s.headers.get('Strict-Transport-Security')); "
        "print(p.status_code, p.headers.get('Location'), p.headers.get('Strict-Transport-Security'))"
    )
    r = manage("shell", "-c", code, env={**PRODUCTION, "DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite3"})
    assert r.returncode == 0, r.stderr
    secure, plain = r.stdout.strip().splitlines()[-2:]
    assert secure == "302 max-age=31536000; includeSubDomains; preload"
    assert plain == "301 https://portal.example.com/ None"


# --- secrets --------------------------------------------------------------------------------------------------

CLIENT_ID = "cid-SECRET-5e1f0c7d"
OAUTH_SECRET = "oauth-SECRET-a93b77e2"
GEN1_KEY = "gen1-SECRET-0d4c2e91"
EFOTA_SECRET = "efota-SECRET-61fe09b4"


def base64_forms(secret: bytes) -> list[str]:
    """The parts of secret's base64 (standard and URL-safe) that stay the same wherever it sits in a longer
    base64 text (a JWT payload, a Basic header): one per byte alignment."""
    forms = []
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + secret).decode()
        core = encoded[4:-4] if offset else encoded[:-4]
        forms += [core, core.replace("+", "-").replace("/", "_")]
    return forms


def secret_markers() -> list[str]:
    """Every form a Knox secret could take in text. For the private key only its private parts count: the modulus
    at the start of the key is public (the account page shows the public key)."""
    markers = []
    for secret in (CLIENT_ID, OAUTH_SECRET, GEN1_KEY, EFOTA_SECRET):
        markers += [secret, *base64_forms(secret.encode())]
    private_b64 = keys_dict()["Private"]  # keys.json: base64 PKCS#8 DER, which is also the PKCS#8 PEM body
    der = base64.b64decode(private_b64)
    markers += [private_b64[i : i + 40] for i in range(400, len(private_b64) - 40, 200)]  # past the modulus
    key = serialization.load_der_private_key(der, password=None)
    pkcs1_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    ).decode()
    markers += pkcs1_pem.splitlines()[6:-1:3]  # PEM body lines past the modulus
    numbers = key.private_numbers()  # type: ignore[union-attr]  # an RSA key
    for value in (numbers.d, numbers.p, numbers.q):
        raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
        markers += [str(value)[:40], raw[:24].hex()]
        for start in (0, 40, 80):
            markers += base64_forms(raw[start : start + 24])
    return markers


def leaks(text: str, markers: list[str]) -> list[str]:
    return [m for m in markers if m in text]


@contextmanager
def every_log_record(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """caplog at DEBUG for every logger, including those that do not propagate to the root (django, and its
    request logger), with SQL logging on."""
    caplog.set_level(logging.DEBUG)
    attached = []
    for name in list(logging.root.manager.loggerDict):
        logger = logging.getLogger(name)
        caplog.set_level(logging.DEBUG, logger=name)
        if not logger.propagate:
            logger.addHandler(caplog.handler)
            attached.append(logger)
    connection.force_debug_cursor = True
    try:
        yield
    finally:
        connection.force_debug_cursor = False
        for logger in attached:
            logger.removeHandler(caplog.handler)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SecretsTestCase(BaseTestCase):
    @pytest.fixture(autouse=True)
    def _caplog(self, caplog: pytest.LogCaptureFixture) -> None:
        self.caplog = caplog

    def account_data(self, **extra: object) -> dict[str, object]:
        return {
            "name": "Acme Gen1",
            "environment": "sandbox",
            "region": "eu",
            "kdp_generation": "gen1",
            "auth_mode": "gen1_key",
            "reseller_id": "4600000925",
            "efota_client_id": "efota-1",
            "efota_mdm_id": "d1e2f3g4h5",
            "is_active": "on",
            "keys_file": SimpleUploadedFile("keys.json", keys_json(), content_type="application/json"),
            "client_identifier": CLIENT_ID,
            "oauth_client_secret": OAUTH_SECRET,
            "gen1_api_key": GEN1_KEY,
            "efota_client_secret": EFOTA_SECRET,
            **extra,
        }

    def failing_request(
        self, post: dict[str, object], url: str, failure: AbstractContextManager[object]
    ) -> tuple[object, ...]:
        """POST, make the view fail with `failure`, and return (request, exc_type, exc_value, tb) as Django's
        error handling saw them."""
        seen = {}

        def grab(sender: object, request: object, **kwargs: object) -> None:
            seen["request"], seen["exc_info"] = request, sys.exc_info()

        got_request_exception.connect(grab)
        try:
            with failure, pytest.raises(RuntimeError):
                self.client.post(url, post)
        finally:
            got_request_exception.disconnect(grab)
        return (seen["request"], *seen["exc_info"])

    def error_reports(self, request: object, *exc_info: object) -> list[str]:
        reporter = ExceptionReporter(request, *exc_info)
        reports = [reporter.get_traceback_html(), reporter.get_traceback_text()]
        reports.append(technical_500_response(request, *exc_info).content.decode())
        assert "account_" in reports[1] and "********" in reports[1]  # a real report, with values hidden
        return reports

    @responses.activate(assert_all_requests_are_fired=False)
    def test_knox_secrets_never_leak(self):
        markers = secret_markers()
        texts: dict[str, str] = {}
        # Let real connections through to a closed port: the test connection meets an unreachable Knox.
        responses.add_passthru("http://127.0.0.1")
        knox_down = {"KNOX_SANDBOX_URL": f"http://127.0.0.1:{closed_port()}", "KNOX_MAX_RETRIES": 0}
        with every_log_record(self.caplog), self.settings(**knox_down, KNOX_KDP_RATE_LIMIT=0, KNOX_GUARD_RATE_LIMIT=0):
            self.client.force_login(self.admin)
            r = self.client.post("/accounts/new/", self.account_data(), follow=True)
            account = KnoxAccount.objects.get(name="Acme Gen1")
            assert account.secret("gen1_api_key") == GEN1_KEY and account.secret("client_identifier") == CLIENT_ID
            assert account.secret("private_key") == keys_dict()["Private"]
            texts["create"] = r.content.decode()
            pk = account.pk
            for url in (f"/accounts/{pk}/", f"/accounts/{pk}/edit/", "/accounts/", f"/admin/portal/knoxaccount/{pk}/change/",
                        "/admin/portal/knoxaccount/"):  # fmt: skip
                r = self.client.get(url)
                assert r.status_code == 200, url
                texts[url] = r.content.decode()

            # Test connection is a job (portal.lookups): the worker meets the unreachable Knox; the page shows it.
            with self.captureOnCommitCallbacks(execute=True):
                r = self.client.post(f"/accounts/{pk}/test/", headers={"HX-Request": "true"})
            texts["test (htmx)"] = r.content.decode()
            test_job = Job.objects.filter(kind="portal.connection_test").latest("id")
            r = self.client.get(f"/jobs/{test_job.pk}/result/", headers={"HX-Request": "true"})
            texts["test answer"] = r.content.decode()
            assert "connection to Knox failed" in texts["test answer"]
            texts["test"] = self.client.post(f"/accounts/{pk}/test/", follow=True).content.decode()
            texts["test jobs"] = str(list(Job.objects.filter(kind="portal.connection_test").values()))
            r = self.client.post(f"/accounts/{pk}/edit/", self.account_data(), follow=True)
            texts["edit"] = r.content.decode()

            # Forced failures with the secrets in the POST (and, further down, in local variables).
            fail_saving = mock.patch.object(KnoxAccount, "save", side_effect=RuntimeError("database went away"))
            request, *exc_info = self.failing_request(self.account_data(), f"/accounts/{pk}/edit/", fail_saving)
            for i, report in enumerate(self.error_reports(request, *exc_info)):
                texts[f"edit error report {i}"] = report
            assert "oauth_client_secret" in texts["edit error report 1"]  # the field is listed, its value hidden
            # The connection test fails in the worker (the request only queues it): Django's error report of that
            # failure, as an error-reporting tool would build it, hides the frames' values too.
            fail_signing = mock.patch("portal.knox.auth.jwt.encode", side_effect=RuntimeError("signing failed"))
            with fail_signing, pytest.raises(RuntimeError) as failed, self.captureOnCommitCallbacks(execute=True):
                self.client.post(f"/accounts/{pk}/test/")
            # The worker's stack starts at the task (this test's own frames, which hold the markers, are not part
            # of what a worker would report).
            tb = failed.tb
            while tb is not None and tb.tb_frame.f_code.co_name != "run_lookup":
                tb = tb.tb_next
            assert tb is not None, "the failure did not come from the lookup task"
            reporter = ExceptionReporter(None, failed.type, failed.value, tb)
            texts["test error report html"] = reporter.get_traceback_html()
            texts["test error report text"] = reporter.get_traceback_text()
            assert "connection_test" in texts["test error report text"]
            assert "********" in texts["test error report text"]

            for url in ("/audit/", "/admin/portal/auditevent/", "/"):
                texts[url] = self.client.get(url).content.decode()
        texts["audit rows"] = str(list(AuditEvent.objects.values()))
        texts["logs"] = self.caplog.text
        assert "knox " in texts["logs"] and "Internal Server Error" in texts["logs"]  # the logs were captured

        leaked = {where: found for where, text in texts.items() if (found := leaks(text, markers))}
        assert leaked == {}, {where: f"{len(found)} markers, e.g. {found[0]}" for where, found in leaked.items()}
        for report in (v for k, v in texts.items() if "report" in k):
            assert settings.SECRET_KEY not in report
            assert not [key for key in settings.FIELD_ENCRYPTION_KEYS if key in report]
