from __future__ import annotations

import os

import pytest

# Processes the tests start (workers, commands) end a job at once when Knox is dead, as before outages were
# waited out; the outage tests pass KNOX_OUTAGE_PATIENCE to their processes themselves.
os.environ.setdefault("KNOX_OUTAGE_PATIENCE", "0")


@pytest.fixture(autouse=True)
def _isolated_redis(settings):
    """With REDIS_URL set (make test-pg) the cache and rate-limit slots live in Redis, which test transactions do
    not roll back: start every test from an empty Redis database. (The database cache needs nothing: its rows
    roll back with the test.)"""
    from portal.knox.auth import forget_tokens

    forget_tokens()  # the per-process memo of Knox tokens: each test has its own sandbox and keys
    if settings.REDIS_URL:
        from django.core.cache import cache

        cache.clear()
    yield


@pytest.fixture(autouse=True)
def _no_outage_patience(settings):
    """Tests of a dead Knox expect the job to end at once; the outage tests (tests/reliability/test_outage.py and
    tests/portal/test_engine.py) set KNOX_OUTAGE_PATIENCE themselves."""
    settings.KNOX_OUTAGE_PATIENCE = 0


@pytest.fixture(autouse=True, scope="session")
def _private_keys_loaded_once():
    """Loading an RSA private key checks it, which costs about 35 ms (several times that on a busy machine), and
    a test against the sandbox loads the same keys.json key four times (validating the file, then signing for
    each service). Within the session each key is loaded once, by its bytes; a key that fails to load is not
    remembered, so the tests of unusable keys still get their error every time."""
    from cryptography.hazmat.primitives import serialization

    load = serialization.load_der_private_key
    loaded: dict[tuple, object] = {}

    def load_once(data, password=None, *args, **kwargs):
        key = (bytes(data), password, args, tuple(sorted(kwargs.items())))
        if key not in loaded:
            loaded[key] = load(data, password, *args, **kwargs)
        return loaded[key]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(serialization, "load_der_private_key", load_once)
        yield


@pytest.fixture
def knox_sandbox(tmp_path, settings):
    """A real Knox sandbox on an ephemeral loopback port; accounts with environment "sandbox" point at it."""
    from sandbox.testing import running_sandbox

    with running_sandbox(tmp_path / "knox-sandbox", process_delay=0.2) as server:
        settings.KNOX_SANDBOX_URL = server.url
        yield server


@pytest.fixture
def sandbox_account(knox_sandbox, db):
    """The portal account `make run` would create, imported from the running sandbox's credentials.json."""
    import io

    from django.core.management import call_command

    from portal.models import KnoxAccount

    call_command("import_sandbox_account", str(knox_sandbox.credentials_path.parent), stdout=io.StringIO())
    return KnoxAccount.objects.get(name="Sandbox")


# --- fixtures the tests of more than one app use ---------------------------------------------------------


def run_to_success(kind: str, account, task) -> None:
    """Run a new `kind` job of `account` in-process with `task(job_pk)`, and require that it succeeded."""
    from portal.models import Job

    job = Job.objects.create(kind=kind, account=account)
    task(job.pk)
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED, job.error_summary


@pytest.fixture
def synced(sandbox_account):
    """The sandbox account with its customers and profile aliases synced from Knox."""
    from kdp.tasks import sync_customers

    run_to_success("kdp.customers", sandbox_account, sync_customers)
    return sandbox_account


@pytest.fixture
def customer(synced):
    """The first verified customer of the synced sandbox account (by name)."""
    from kdp.models import Customer

    return Customer.objects.filter(account=synced, status="Verified").order_by("name").first()


@pytest.fixture
def guard_synced(sandbox_account):
    """The sandbox account with its Knox Guard devices synced."""
    from guard.models import GuardDevice
    from guard.tasks import sync_devices

    run_to_success("guard.sync", sandbox_account, sync_devices)
    assert GuardDevice.objects.filter(account=sandbox_account).exists()
    return sandbox_account


@pytest.fixture
def kdp_polls_sooner(monkeypatch):
    """KDP's first status read 0.3 s after sending instead of 1 s: the test sandbox settles a transaction in
    0.2 s, so a test would otherwise spend most of its time asleep. (tests/kdp/conftest.py does this for every
    KDP test; this is for the tests of other folders that run KDP jobs.)"""
    monkeypatch.setattr("kdp.tasks.POLL_FIRST_DELAY_SECONDS", 0.3)


@pytest.fixture
def quick_kdp(settings, kdp_polls_sooner):
    """KDP sooner, and our client's KDP pacing off too (the sandbox still enforces Knox's limit; the tests using
    this make far fewer calls than that, and assert nothing about the sandbox's throttling)."""
    settings.KNOX_KDP_RATE_LIMIT = 0


@pytest.fixture
def operator(db):
    """Olivia, the operator persona of tests/base.py, for pytest-style tests."""
    from tests.base import make_user

    return make_user("olivia", "operator")
