"""The portal's Knox plumbing against the real sandbox over loopback: import, token flows, test connection."""

from __future__ import annotations

import io
import json

import pytest
import requests
from django.core.management import call_command
from django.core.management.base import CommandError

from portal.knox import errors
from portal.knox.checks import check_connection
from portal.knox.http import KnoxSession
from portal.models import AuditEvent, KnoxAccount


def test_import_creates_gen2_and_gen1_accounts_through_the_form(sandbox_account, knox_sandbox):
    creds = json.loads(knox_sandbox.credentials_path.read_text())
    assert sandbox_account.environment == "sandbox" and sandbox_account.kdp_generation == "gen2"
    assert sandbox_account.reseller_id == creds["reseller_id"]
    assert sandbox_account.secret("client_identifier") == creds["client_identifier"]
    assert sandbox_account.public_key == json.loads(knox_sandbox.keys_path.read_text())["Public"]
    gen1 = KnoxAccount.objects.get(name="Sandbox (Gen1)")
    assert gen1.kdp_generation == "gen1" and gen1.secret("gen1_api_key") == creds["gen1_api_key"]
    assert AuditEvent.objects.filter(action="account.create", actor=None).count() == 2


def test_import_is_idempotent(sandbox_account, knox_sandbox):
    call_command("import_sandbox_account", str(knox_sandbox.credentials_path.parent), stdout=io.StringIO())
    assert KnoxAccount.objects.filter(name__startswith="Sandbox").count() == 2


def test_import_refuses_a_broken_keys_file(knox_sandbox, db, tmp_path):
    folder = tmp_path / "copy"
    folder.mkdir()
    creds = json.loads(knox_sandbox.credentials_path.read_text())
    (folder / "keys.json").write_text('{"Private": "AAAA", "Public": "AAAA"}')
    creds["keys_file"] = str(folder / "keys.json")
    (folder / "credentials.json").write_text(json.dumps(creds))
    with pytest.raises(CommandError, match="does not load as a PKCS#8"):
        call_command("import_sandbox_account", str(folder), stdout=io.StringIO())
    assert not KnoxAccount.objects.exists()


def test_connection_test_passes_for_every_service(sandbox_account):
    results = {r.service: r for r in check_connection(sandbox_account)}
    assert all(r.ok for r in results.values()), [(r.service, r.message) for r in results.values()]
    assert set(results) == {"kdp", "guard", "efota"}
    assert "customer(s) visible" in results["kdp"].message


def test_gen1_connection_test(sandbox_account):
    gen1 = KnoxAccount.objects.get(name="Sandbox (Gen1)")
    results = {r.service: r for r in check_connection(gen1)}
    assert results["kdp_gen1"].ok, results["kdp_gen1"].message


def test_a_wrong_client_identifier_is_explained(sandbox_account):
    sandbox_account.set_secret("client_identifier", "not-the-right-one")
    sandbox_account.save()
    results = {r.service: r for r in check_connection(sandbox_account)}
    assert results["kdp"].ok is False and results["kdp"].code
    assert "Knox" in results["kdp"].message


def test_tokens_are_renewed_after_the_sandbox_expires_them(sandbox_account, knox_sandbox):
    session = KnoxSession(sandbox_account)
    session.request("guard", "GET", "/authorization", idempotent=True)
    requests.post(f"{knox_sandbox.url}/_sandbox/expire-tokens", timeout=5).raise_for_status()
    doc = session.request("guard", "GET", "/authorization", idempotent=True).json_object()
    assert doc["result"] == "SUCCESS"
    r = session.request("kdp", "GET", "/customers", idempotent=True)
    assert r.status == 200


def test_the_sandbox_rate_limit_is_never_hit_by_paced_calls(sandbox_account, knox_sandbox, settings):
    settings.KNOX_KDP_RATE_LIMIT = 10
    session = KnoxSession(sandbox_account)
    for _ in range(25):
        session.request("kdp", "GET", "/customers", idempotent=True)
    state = requests.get(f"{knox_sandbox.url}/_sandbox/state", timeout=5).json()
    assert state["counters"]["rate_limited"] == 0


def test_unpaced_calls_meet_the_sandbox_429_and_recover(sandbox_account, knox_sandbox, settings):
    settings.KNOX_KDP_RATE_LIMIT = 0  # pacing off: the sandbox must throttle and the client must recover
    settings.KNOX_BACKOFF_BASE = 0.05
    session = KnoxSession(sandbox_account)
    for _ in range(30):
        session.request("kdp", "GET", "/customers", idempotent=True)
    state = requests.get(f"{knox_sandbox.url}/_sandbox/state", timeout=5).json()
    assert state["counters"]["rate_limited"] > 0


def test_a_dead_knox_is_reported_not_retried_forever(sandbox_account, settings):
    settings.KNOX_SANDBOX_URL = "http://127.0.0.1:9"  # nothing listens on the discard port
    settings.KNOX_MAX_RETRIES = 1
    settings.KNOX_BACKOFF_BASE = 0.01
    with pytest.raises(errors.KnoxUnavailable, match="refused"):
        KnoxSession(sandbox_account).request("guard", "GET", "/authorization", idempotent=True)


def test_admin_action_tests_the_connection(sandbox_account, client, django_capture_on_commit_callbacks):
    from portal.models import Job
    from tests.base import make_user

    admin = make_user("root", "admin", is_staff=True)
    client.force_login(admin)
    with django_capture_on_commit_callbacks(execute=True):  # the admin queues the test; the worker runs it
        r = client.post(
            "/admin/portal/knoxaccount/",
            {"action": "test_connection", "_selected_action": [sandbox_account.pk]},
            follow=True,
        )
    assert r.status_code == 200
    job = Job.objects.get(kind="portal.connection_test")
    page = f"/accounts/{sandbox_account.pk}/?job={job.pk}"
    assert f'Sandbox: connection test queued as job #{job.pk}; <a href="{page}">its answer</a>' in r.content.decode()
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED and job.created_by == admin
    assert "<strong>KDP Gen2</strong>: 5 customer(s) visible" in client.get(page).content.decode()
    sandbox_account.refresh_from_db()
    assert sandbox_account.last_test_ok is True
