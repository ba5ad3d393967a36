"""E-FOTA force updates on the Knox request engine (portal.engine, efota.tasks.ForceUpdates), against the real
sandbox: a force update is not repeatable and E-FOTA cannot say whether a call arrived, so a part whose answer was
lost is never sent again; a call that provably never left is; a worker killed mid-send resumes from the rows; and
an E-FOTA outage is waited out when KNOX_OUTAGE_PATIENCE allows."""

from __future__ import annotations

import pytest
import requests

from efota.client import EfotaClient
from efota.models import ForceUpdate, queue_force_update
from efota.tasks import ForceUpdates, run_force_update
from portal.models import Job
from tests.base import knox_comes_back, lose_first_answer, migrated, refuse_first_connection, set_faults

MODEL, SALES_CODE = "SM-G991B", "BTU"


@pytest.fixture
def efota(sandbox_account, knox_sandbox, settings, monkeypatch):
    """The sandbox's E-FOTA world; the job follows the status quickly (the sandbox processes in 0.2 s) and the
    HTTP layer's own retries are short."""
    settings.KNOX_EFOTA_RATE_LIMIT = 0
    settings.KNOX_MAX_RETRIES = 1
    settings.KNOX_MAX_RATE_LIMITED_RETRIES = 1
    settings.KNOX_BACKOFF_BASE = 0.01
    settings.KNOX_BACKOFF_MAX = 0.02
    monkeypatch.setattr("efota.tasks.STATUS_FIRST_DELAY_SECONDS", 0.3)
    monkeypatch.setattr("efota.tasks.STATUS_MAX_INTERVAL_SECONDS", 0.5)
    monkeypatch.setattr("efota.tasks.STATUS_WATCH_SECONDS", 30)
    return knox_sandbox.credentials["efota"]


def force_update_job(account, efota, n: int, part_size: int, monkeypatch) -> Job:
    """A queued force update of `n` registered devices, in parts of `part_size`."""
    monkeypatch.setattr("efota.tasks.EFOTA_MAX_DEVICES_PER_CALL", part_size)
    return queue_force_update(
        account, customer_id=efota["customer_id"], licence=efota["license"], model=MODEL, sales_code=SALES_CODE,
        serials=efota["device_serials"][:n], user=None,
    )  # fmt: skip


def started_at_e_fota(server) -> int:
    """How many force updates E-FOTA itself started (its own records, not the requests it received)."""
    return len(requests.get(f"{server.url}/_sandbox/state?devices=0", timeout=10).json()["efota"]["forceUpdates"])


def outage_after_the_start(monkeypatch, server) -> None:
    """E-FOTA starts the force update, then answers every call with a service error (5xx, FUD_9xxx)."""
    real = EfotaClient.force_update

    def then_outage(self, *args, **kwargs):
        force_id = real(self, *args, **kwargs)
        set_faults(server, error=1)
        return force_id

    monkeypatch.setattr(EfotaClient, "force_update", then_outage)


def run_through_an_outage(account, efota, server, monkeypatch) -> tuple[Job, ForceUpdate]:
    """A force update of two devices (one part) that E-FOTA starts, then fails every call; run, and E-FOTA is
    healthy again. Returns the job and its part as they ended."""
    outage_after_the_start(monkeypatch, server)
    job = force_update_job(account, efota, 2, 100, monkeypatch)
    run_force_update(job.pk)
    set_faults(server)
    job.refresh_from_db()
    return job, parts(job)[0]


def parts(job: Job) -> list[ForceUpdate]:
    return list(ForceUpdate.objects.filter(job=job).order_by("sequence"))


def test_a_part_whose_answer_was_lost_is_never_sent_again(sandbox_account, knox_sandbox, efota, monkeypatch):
    lose_first_answer(monkeypatch, EfotaClient, "force_update")  # E-FOTA starts it, nobody hears
    job = force_update_job(sandbox_account, efota, 4, 2, monkeypatch)
    run_force_update(job.pk)

    job.refresh_from_db()
    first, second = parts(job)
    assert started_at_e_fota(knox_sandbox) == 2  # one per part: the lost one was not sent again
    assert (first.state, first.knox_code, first.force_update_id) == ("failed", "UNKNOWN", "")
    assert "check the E-FOTA console before repeating it" in first.knox_message
    assert (second.state, second.succeeded, second.processing, second.downloaded) == ("complete", 2, 0, 2)
    assert (job.status, job.succeeded, job.failed) == (Job.Status.PARTIAL, 2, 2)
    assert "E-FOTA console" in job.error_summary and "[UNKNOWN]" in job.error_summary
    run_force_update(job.pk)  # delivered again: a finished job is left alone
    assert started_at_e_fota(knox_sandbox) == 2


def test_a_refused_connection_is_sent_once_e_fota_is_back(sandbox_account, knox_sandbox, efota, monkeypatch, settings):
    settings.KNOX_OUTAGE_PATIENCE = 60
    reasons = knox_comes_back(monkeypatch, knox_sandbox)
    attempts = refuse_first_connection(monkeypatch, EfotaClient, "force_update")
    job = force_update_job(sandbox_account, efota, 2, 100, monkeypatch)
    run_force_update(job.pk)

    job.refresh_from_db()
    (part,) = parts(job)
    assert len(attempts) == 2 and started_at_e_fota(knox_sandbox) == 1
    assert reasons and "connection refused" in reasons[0]
    assert (part.state, part.succeeded, part.processing) == ("complete", 2, 0) and part.force_update_id
    assert (job.status, job.succeeded, job.failed, job.waiting_since) == (Job.Status.SUCCEEDED, 2, 0, None)


def test_a_refused_connection_without_patience_ends_not_sent(sandbox_account, knox_sandbox, efota, monkeypatch):
    refuse_first_connection(monkeypatch, EfotaClient, "force_update")
    job = force_update_job(sandbox_account, efota, 4, 2, monkeypatch)
    run_force_update(job.pk)

    job.refresh_from_db()
    assert [(p.state, p.knox_code) for p in parts(job)] == [("failed", "NOT_SENT")] * 2  # safe to queue again
    assert (job.status, job.succeeded, job.failed) == (Job.Status.FAILED, 0, 4)
    assert "connection refused" in job.error_summary and started_at_e_fota(knox_sandbox) == 0


def test_a_worker_killed_mid_send_resumes_without_sending_twice(sandbox_account, knox_sandbox, efota, monkeypatch):
    """Three parts, left as a killed worker leaves them: the first was sent and its answer recorded, but the worker
    died before marking it submitted; the second was being sent (E-FOTA started it, nobody heard); the third was
    never sent."""
    job = force_update_job(sandbox_account, efota, 6, 2, monkeypatch)
    protocol = ForceUpdates(job)
    protocol.plan()
    first, second, third = parts(job)
    assert first.start_sending()
    protocol.send(first)  # answered and recorded; killed before mark_submitted
    assert second.start_sending()
    EfotaClient(sandbox_account).force_update(
        efota["customer_id"], efota["license"], MODEL, SALES_CODE, second.serials
    )  # reached E-FOTA; killed before the answer was recorded
    assert started_at_e_fota(knox_sandbox) == 2

    run_force_update(job.pk)  # the next worker

    job.refresh_from_db()
    first, second, third = parts(job)
    assert started_at_e_fota(knox_sandbox) == 3  # only the third was sent now
    assert (first.state, first.succeeded, first.processing) == ("complete", 2, 0)
    assert (second.state, second.knox_code, second.failed) == ("failed", "UNKNOWN", 2)
    assert (third.state, third.succeeded) == ("complete", 2) and third.force_update_id
    assert (job.status, job.total, job.succeeded, job.failed) == (Job.Status.PARTIAL, 6, 4, 2)


def test_an_outage_while_following_is_waited_out(sandbox_account, knox_sandbox, efota, monkeypatch, settings):
    """E-FOTA answers every call with a service error (FUD_9xxx) once the part is started: the status reads fail
    past their retries, the job waits, and once E-FOTA is back it reads the status and ends normally."""
    settings.KNOX_OUTAGE_PATIENCE = 60
    reasons = knox_comes_back(monkeypatch, knox_sandbox)
    job, part = run_through_an_outage(sandbox_account, efota, knox_sandbox, monkeypatch)
    assert reasons and "E-FOTA had a service error" in reasons[0]
    assert (part.state, part.downloaded, part.processing, part.knox_code) == ("complete", 2, 0, "")
    assert (job.status, job.succeeded, job.failed, job.waiting_since) == (Job.Status.SUCCEEDED, 2, 0, None)
    assert started_at_e_fota(knox_sandbox) == 1


def test_a_rate_limited_send_waits_and_is_sent_once(sandbox_account, knox_sandbox, efota, monkeypatch, settings):
    """E-FOTA answers the force update 429 (FUD_9003) past the retries: refused before processing, so the part is
    sent again after the wait, once."""
    settings.KNOX_OUTAGE_PATIENCE = 60
    reasons = knox_comes_back(monkeypatch, knox_sandbox)
    EfotaClient(sandbox_account).license_info(efota["customer_id"], efota["license"])  # a token, before the 429s
    set_faults(knox_sandbox, throttle=1)
    job = force_update_job(sandbox_account, efota, 2, 100, monkeypatch)
    run_force_update(job.pk)

    job.refresh_from_db()
    (part,) = parts(job)
    assert reasons and "FUD_9003" in reasons[0]
    assert (part.state, part.succeeded) == ("complete", 2) and started_at_e_fota(knox_sandbox) == 1
    assert job.status == Job.Status.SUCCEEDED


def test_an_outage_past_the_patience_ends_the_job_with_the_reason(sandbox_account, knox_sandbox, efota, monkeypatch):
    """Patience 0 (the tests' default): the started part stays started (its devices are updating), none of them is
    counted failed, and the job (partial: it could not follow them) says why it stopped following."""
    job, part = run_through_an_outage(sandbox_account, efota, knox_sandbox, monkeypatch)
    assert (part.state, part.succeeded, part.failed, part.knox_code) == ("complete", 2, 0, "UNKNOWN")
    assert part.is_in_progress  # the page says E-FOTA still counted them as processing; "Refresh status" asks
    assert job.status == Job.Status.PARTIAL and "E-FOTA had a service error" in job.error_summary
    assert (job.succeeded, job.failed) == (2, 0)


def test_an_outage_after_the_watch_window_does_not_hold_the_job(
    sandbox_account, knox_sandbox, efota, monkeypatch, settings
):
    """The status read due at the end of the window meets an outage: the following ends there (the devices are
    updating; "Refresh status" asks later) instead of waiting for E-FOTA."""
    settings.KNOX_OUTAGE_PATIENCE = 60
    reasons = knox_comes_back(monkeypatch, knox_sandbox)
    monkeypatch.setattr("efota.tasks.STATUS_FIRST_DELAY_SECONDS", 0.5)
    monkeypatch.setattr("efota.tasks.STATUS_WATCH_SECONDS", 0.4)  # over by the first read
    job, part = run_through_an_outage(sandbox_account, efota, knox_sandbox, monkeypatch)
    assert reasons == [] and part.state == "complete" and part.knox_code.startswith("FUD_9")
    assert part.is_in_progress and (job.status, job.succeeded, job.failed) == (Job.Status.SUCCEEDED, 2, 0)


@pytest.mark.django_db(transaction=True)
def test_the_migration_gives_existing_parts_their_state():
    """Started (counted succeeded by the old job), refused (counted failed), attempted with no answer (SENDING: the
    engine settles it) and never sent."""

    def rows(apps) -> None:
        account = apps.get_model("portal", "KnoxAccount").objects.create(name="A", environment="sandbox")
        job = apps.get_model("portal", "Job").objects.create(kind="efota.force_update", account=account)
        part = apps.get_model("efota", "ForceUpdate").objects.create
        ids = {"account": account, "job": job, "customer_id": "C", "licence": "L", "model": MODEL, "sales_code": "S"}
        part(**ids, sequence=1, serials=["A"] * 3, force_update_id="FU-1", send_attempted_at=job.created_at, failed=1)
        part(**ids, sequence=2, serials=["B"] * 2, last_code="FUD_3018", last_error="expired")
        part(**ids, sequence=3, serials=["C"] * 4, send_attempted_at=job.created_at)
        part(**ids, sequence=4, serials=["D"] * 5)

    migrated("efota", "0001_initial", "0002_forceupdate_engine", rows)
    found = ForceUpdate.objects.order_by("sequence").values_list(
        "state", "device_count", "succeeded", "failed", "download_failed", "knox_code", "knox_message"
    )
    assert list(found) == [
        ("complete", 3, 3, 0, 1, "", ""),
        ("failed", 2, 0, 2, 0, "FUD_3018", "expired"),
        ("sending", 4, 0, 0, 0, "", ""),
        ("prepared", 5, 0, 0, 0, "", ""),
    ]


def test_started_devices_count_as_progress_while_e_fota_updates_them(sandbox_account, knox_sandbox, efota, monkeypatch):
    """Following a part can take STATUS_WATCH_SECONDS: the job's progress shows its devices as started as soon as
    E-FOTA took them, not only when the following ends."""
    job = force_update_job(sandbox_account, efota, 4, 2, monkeypatch)
    seen: list[tuple[int, int]] = []
    real = EfotaClient.force_update_summary

    def summary(self, *args, **kwargs):
        progress = Job.objects.values_list("succeeded", "failed").get(pk=job.pk)
        seen.append(progress)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(EfotaClient, "force_update_summary", summary)
    run_force_update(job.pk)
    assert seen and seen[0] == (4, 0)  # both parts started before the first status read
    job.refresh_from_db()
    assert (job.status, job.succeeded, job.failed) == (Job.Status.SUCCEEDED, 4, 0)
