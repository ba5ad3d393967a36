"""`manage.py guard_action` against the in-process sandbox (real HTTP over loopback), plus one real process with its
own SQLite file, as a shell runs it."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from guard.models import UPLOAD_RESULTS, GuardAction, GuardDevice, GuardUploadDevice
from portal.models import Job, KnoxAccount, Upload
from tests import base
from tests.base import child_env, fresh_imeis, migrated_database, run_manage, sandbox_state
from tests.guard.helpers import device_in, imei_csv

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "samples" / "guard-bulk-10.xlsx"
LOCK = ["--message", "Payment overdue: call us", "--tel", "+44 20 7946 0000"]


def run(*args: str) -> tuple[int, str, str]:
    """`guard_action` as the shell would see it: (exit code, stdout, stderr)."""
    return base.run_command("guard_action", *args)


def run_json(*args: str) -> tuple[int, dict[str, Any]]:
    return base.run_json("guard_action", *args)


def write_csv(tmp_path: Path, uids: list[str], name: str = "devices.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(imei_csv(uids))
    return path


def uids(account: KnoxAccount, state: str) -> list[str]:
    return list(
        GuardDevice.objects.filter(account=account, state=state).order_by("id").values_list("device_uid", flat=True)
    )


def test_it_locks_the_enrolled_devices_of_a_file_and_waits(guard_synced, knox_sandbox, tmp_path):
    enrolled = uids(guard_synced, "Enrolled")
    path = write_csv(tmp_path, enrolled)
    code, data = run_json("lock", str(path), "--account", "Sandbox", *LOCK, "--wait")
    assert code == 0, data
    assert (data["kind"], data["action"], data["status"], data["error"]) == ("guard.lock", "lock", "succeeded", None)
    figures = {k: data[k] for k in ("rows", "valid", "invalid", "submitted", "succeeded", "failed")}
    assert figures == {"rows": 3, "valid": 3, "invalid": 0, "submitted": 3, "succeeded": 3, "failed": 0}
    assert data["failures"] == [] and data["file"] == "devices.csv" and data["account"] == "Sandbox"
    assert data["action_params"] == {"message": "Payment overdue: call us", "tel": "+44 20 7946 0000"}
    assert set(GuardDevice.objects.filter(device_uid__in=enrolled).values_list("state", flat=True)) == {"Locking"}
    knox = sandbox_state(knox_sandbox)["guard"]["devices"]
    assert {knox[u]["state"] for u in enrolled} <= {"Locking", "Locked"}
    assert {knox[u]["lastMessage"]["tel"] for u in enrolled} == {"+44 20 7946 0000"}
    job = Job.objects.get(pk=data["job"])
    assert job.created_by is None and job.func == "guard.tasks.run_actions"
    assert Upload.objects.get(job=job).service == "guard"
    # job_status prints the very same summary for the finished job
    out = io.StringIO()
    call_command("job_status", str(job.pk), "--json", stdout=out)
    assert json.loads(out.getvalue()) == data


def test_a_device_in_the_wrong_state_fails_and_exits_1(guard_synced, knox_sandbox, tmp_path):
    enrolled, pending = device_in(guard_synced, "Enrolled"), device_in(guard_synced, "Pending")
    path = write_csv(tmp_path, [enrolled.device_uid, pending.device_uid])
    before = sandbox_state(knox_sandbox)["counters"]["by_path"]
    code, data = run_json("lock", str(path), "--account", "Sandbox", *LOCK, "--wait")
    assert code == 1
    assert data["status"] == "partial" and (data["succeeded"], data["failed"]) == (1, 1)
    failure = data["failures"][0]
    assert (failure["identifier"], failure["row"], failure["code"]) == (pending.device_uid, 3, "STATE")
    assert "state does not allow" in failure["reason"]
    # Refused before sending: one device left, so it went through the single-device endpoint.
    after = sandbox_state(knox_sandbox)["counters"]["by_path"]
    assert after.get("/kcs/v1.1/kg/devices/lock", 0) - before.get("/kcs/v1.1/kg/devices/lock", 0) == 1
    assert sandbox_state(knox_sandbox)["guard"]["devices"][pending.device_uid]["state"] == "Pending"


def test_human_output_names_the_failed_device(guard_synced, tmp_path):
    pending = device_in(guard_synced, "Pending")
    code, out, err = run("unlock", str(write_csv(tmp_path, [pending.device_uid])), "--account", "Sandbox", "--wait")
    assert code == 1
    assert "Status: failed" in out and pending.device_uid in out and "[STATE]" in out and "customer" not in out
    assert "running it in this process" in err and "1 of 1 devices failed" in err


def test_invalid_parameters_exit_2_naming_every_problem(guard_synced, tmp_path):
    path = write_csv(tmp_path, uids(guard_synced, "Enrolled"))
    argv = [
        "blink", str(path), "--account", "Sandbox", "--message", "x" * 201, "--email", "pay-at-example",
        "--interval", "2", "--quiet-hours", "22-7-1", "--quiet-days", "6-0", "--approve-id", "LOAN-1",
    ]  # fmt: skip
    code, out, err = run(*argv, "--wait")
    assert code == 2 and out == ""
    for words in (
        "5 problems",
        "--message: The message is 201 characters; Knox Guard allows 200.",
        "--email: This email address does not look right.",
        "--interval: The reminder interval must be between 3 seconds and 86,400 seconds (24 hours); it is 2.",
        "--quiet-hours: The quiet period needs exactly two hours (0-23).",
        "--approve-id: blink does not use this option; leave it out.",
    ):
        assert words in err
    code, data = run_json(*argv)
    assert code == 2 and data["status"] == "refused" and data["job"] is None and "--interval" in data["error"]
    assert not Job.objects.filter(kind__startswith="guard.").exclude(kind="guard.sync").exists()
    assert not Upload.objects.exists() and not GuardAction.objects.exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["lock", "--message", "Pay"], "--tel: Give a phone number or an email address"),
        (["blink", "--message", "Pay", "--tel", "1234"], "--interval: Say how often the reminder repeats"),
        (["blink", *LOCK, "--interval", "hourly"], "--interval: Give the interval in whole seconds"),
        (["blink", *LOCK, "--interval", "60", "--quiet-hours", "late"], "--quiet-hours: Write it as two whole"),
        (["blink", *LOCK, "--interval", "60", "--quiet-days", "6-0"], "--quiet-hours: Quiet days also need"),
        (["blink", *LOCK, "--interval", "60", "--quiet-hours", "22-24"], "--quiet-hours: The quiet period needs"),
        (["approve", "--approve-id", "L" * 51], "--approve-id: The approve ID is 51 characters"),
        (["approve", "--comment", "c" * 1001], "--comment: The comment is 1001 characters"),
        (["unlock", "--message", "Thanks"], "--message: unlock does not use this option"),
        (["shutdown"], "There is no Knox Guard action “shutdown”; the actions are: approve, reject, lock"),
    ],
)
def test_each_parameter_problem_is_said_in_words(offline_account, argv, message):
    action, *options = argv
    code, _, err = run(action, str(SAMPLE), "--account", "Offline", *options, "--wait")
    assert code == 2 and message in err, err
    assert not Job.objects.exists() and not Upload.objects.exists()


@pytest.fixture
def offline_account(db):
    """An account that looks ready for Knox Guard; for checks that fail before anything would call Knox."""
    account = KnoxAccount(name="Offline", environment=KnoxAccount.Environment.SANDBOX)
    account.public_key = "not-used"
    account.set_secret("private_key", "not-used")
    account.set_secret("client_identifier", "not-used")
    account.save()
    return account


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--account", "Nobody"], "There is no Knox account named “Nobody”; the accounts are: “Bare”, “Offline”."),
        (["--account", "Bare"], "“Bare” is not ready for Knox Guard: it still needs keys.json"),
    ],
)
def test_an_unknown_or_unready_account_exits_2(offline_account, argv, message):
    KnoxAccount.objects.create(name="Bare", environment=KnoxAccount.Environment.SANDBOX)
    code, out, err = run("reject", str(SAMPLE), *argv)
    assert code == 2 and message in err and out == ""
    code, data = run_json("reject", str(SAMPLE), *argv, "--wait")
    assert code == 2 and message in data["error"] and data["status"] == "refused" and data["job"] is None
    assert not Job.objects.exists() and not Upload.objects.exists()


def test_a_switched_off_account_exits_2(offline_account):
    KnoxAccount.objects.filter(pk=offline_account.pk).update(is_active=False)
    code, _, err = run("reject", str(SAMPLE), "--account", "Offline")
    assert code == 2 and "switched off" in err


def test_a_missing_file_or_one_without_devices_exits_2(offline_account, tmp_path):
    code, _, err = run("reject", "missing.xlsx", "--account", "Offline", "--dry-run")
    assert code == 2 and "Cannot read missing.xlsx: there is no such file." in err
    bad = tmp_path / "bad.csv"
    bad.write_text("IMEI\n35922158130044\nhello\n")
    code, data = run_json("reject", str(bad), "--account", "Offline", "--dry-run")
    assert code == 2 and data["status"] == "refused" and data["valid"] == 0 and data["rows"] == 2
    assert "No row of bad.csv holds a device" in data["error"] and len(data["problems"]) == 2
    assert not Upload.objects.exists()


def test_one_approve_id_for_many_devices_exits_2(offline_account):
    code, _, err = run("approve", str(SAMPLE), "--account", "Offline", "--approve-id", "LOAN-7", "--dry-run")
    assert code == 2 and "needs a different one per device" in err and "holds 10 devices" in err
    assert not Upload.objects.exists()


def test_a_dry_run_checks_everything_and_sends_nothing(offline_account):
    """No Knox call at all: the Offline account points nowhere (no sandbox is running)."""
    code, data = run_json("lock", str(SAMPLE), "--account", "Offline", *LOCK, "--dry-run", "--wait")
    assert code == 0, data
    assert (data["job"], data["status"], data["kind"], data["action"]) == (None, "dry-run", "guard.lock", "lock")
    assert (data["rows"], data["valid"], data["invalid"], data["submitted"]) == (10, 10, 0, 0)
    assert data["action_params"] == {"message": "Payment overdue: call us", "tel": "+44 20 7946 0000"}
    assert not Job.objects.exists() and not Upload.objects.exists() and not GuardDevice.objects.exists()
    code, out, _ = run("lock", str(SAMPLE), "--account", "Offline", *LOCK, "--dry-run")
    assert code == 0 and "nothing was submitted" in out and "10 valid" in out


def test_without_wait_it_queues_the_job_and_returns(guard_synced, tmp_path):
    code, data = run_json("complete", str(SAMPLE), "--account", "Sandbox")
    assert code == 0
    assert data["status"] == "queued" and data["job"] and data["submitted"] == 10 and data["failures"] == []
    job = Job.objects.get(pk=data["job"])
    assert job.kind == "guard.complete" and job.status == Job.Status.QUEUED and job.func == "guard.tasks.run_actions"
    assert Upload.objects.get(job=job).status == Upload.Status.SUBMITTED
    assert not GuardAction.objects.exists()  # nothing planned or sent: a worker will do it
    # The same keys as a dry run, so scripts read both alike.
    _, dry = run_json("complete", str(SAMPLE), "--account", "Sandbox", "--dry-run")
    assert list(dry) == list(data)


def test_it_reads_the_devices_from_knox_first_when_the_portal_has_none(sandbox_account, knox_sandbox, tmp_path):
    enrolled = [d["deviceUid"] for d in knox_sandbox.credentials["guard"]["devices"] if d["state"] == "Enrolled"]
    assert not GuardDevice.objects.exists()
    code, data = run_json("message", str(write_csv(tmp_path, enrolled)), "--account", "Sandbox", *LOCK, "--wait")
    assert code == 0, data
    assert Job.objects.get(kind="guard.sync").status == Job.Status.SUCCEEDED
    assert GuardDevice.objects.filter(account=sandbox_account).count() == 13
    assert data["succeeded"] == len(enrolled) == 3


@pytest.mark.slow
def test_the_real_command_locks_devices_against_the_sandbox(knox_sandbox, tmp_path):
    """`manage.py guard_action --json --wait` as a shell runs it: its own process, database file and no qcluster.
    The fresh database has no Knox Guard device, so the command reads them from Knox first."""
    env = child_env(tmp_path, knox_sandbox)
    migrated_database(tmp_path / "cli.sqlite3")
    imported = run_manage(env, "import_sandbox_account", str(knox_sandbox.credentials_path.parent))
    assert imported.returncode == 0, imported.stderr
    devices = knox_sandbox.credentials["guard"]["devices"]
    enrolled = [d["deviceUid"] for d in devices if d["state"] == "Enrolled"]
    path = write_csv(tmp_path, enrolled)
    done = run_manage(env, "guard_action", "lock", str(path), "--account", "Sandbox", *LOCK, "--json", "--wait")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert (data["status"], data["rows"], data["valid"], data["invalid"]) == ("succeeded", 3, 3, 0)
    assert (data["submitted"], data["succeeded"], data["failed"], data["action"]) == (3, 3, 0, "lock")
    knox = sandbox_state(knox_sandbox)["guard"]["devices"]
    assert {knox[u]["state"] for u in enrolled} <= {"Locking", "Locked"}
    unknown = run_manage(env, "guard_action", "lock", str(path), "--account", "Nobody", *LOCK)
    assert unknown.returncode == 2 and "There is no Knox account named “Nobody”" in unknown.stderr


# --- guard_upload: upload a spreadsheet to Knox Guard, then read Knox's per-device results -------------------------


def run_upload_command(*args: str) -> tuple[int, dict[str, Any]]:
    """`manage.py guard_upload ... --json` in this process: (exit code, the one JSON object on stdout)."""
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command("guard_upload", *args, "--json", stdout=out, stderr=err)
    except CommandError as e:
        return e.returncode, json.loads(out.getvalue())
    return 0, json.loads(out.getvalue())


def test_guard_upload_uploads_waits_and_reports_knox_s_per_device_results(guard_synced, knox_sandbox, tmp_path):
    fresh = fresh_imeis(2, "35870000")
    existing = device_in(guard_synced, "Enrolled")  # already in Knox Guard: Knox calls it invalid
    path = write_csv(tmp_path, [fresh[0], existing.device_uid, fresh[1]])
    code, data = run_upload_command(str(path), "--account", "Sandbox", "--auto-accept", "--wait")
    assert code == 1, data  # one device refused
    assert (data["kind"], data["status"], data["succeeded"], data["failed"]) == ("guard.upload", "partial", 2, 1)
    assert data["flags"] == {"autoAccept": True, "autoLock": False, "applySimControl": False,
                             "enableBlockFactoryReset": False}  # fmt: skip
    found = data["knox_results"]
    assert (found["succeeded"], found["failed"], found["unknown"], found["error"]) == (2, 1, 0, None)
    assert found["failures"] == [
        {"identifier": existing.device_uid, "row": 3, "code": "", "reason": "device already exists"}
    ]
    read = Job.objects.get(pk=found["read_jobs"][0])
    assert (read.kind, read.status, read.params) == (UPLOAD_RESULTS, Job.Status.SUCCEEDED, {"job": data["job"]})
    assert GuardUploadDevice.objects.filter(job_id=data["job"]).count() == 3
    knox = sandbox_state(knox_sandbox)["guard"]
    assert {knox["devices"][u]["state"] for u in fresh} <= {"Accepted", "Enrolled"}
    assert knox["uploads"][data["knox_uploads"][0]["upload_id"]]["flags"]["autoAccept"] is True


def test_guard_upload_exits_0_when_knox_guard_accepts_every_device(guard_synced, knox_sandbox, tmp_path):
    fresh = fresh_imeis(3, "35871000")
    out, err = io.StringIO(), io.StringIO()
    call_command("guard_upload", str(write_csv(tmp_path, fresh)), "--account", "Sandbox", "--wait", stdout=out,
                 stderr=err)  # fmt: skip
    text = out.getvalue()
    assert "Status: succeeded; 3 of 3 done" in text and "Knox Guard's per-device results: 3 succeeded, 0 failed" in text
    assert (
        "running it in this process" in err.getvalue() and "reading Knox Guard's per-device results" in err.getvalue()
    )
    assert set(GuardDevice.objects.filter(device_uid__in=fresh).values_list("state", flat=True)) == {"Pending"}


def test_guard_upload_without_wait_queues_the_job_and_a_dry_run_sends_nothing(offline_account, tmp_path):
    code, dry = run_upload_command(str(SAMPLE), "--account", "Offline", "--auto-lock", "--dry-run")
    assert code == 0 and (dry["job"], dry["status"], dry["valid"], dry["submitted"]) == (None, "dry-run", 10, 0)
    assert dry["flags"]["autoLock"] is True and dry["knox_results"] is None
    assert not Job.objects.exists() and not Upload.objects.exists()
    code, data = run_upload_command(str(SAMPLE), "--account", "Offline", "--auto-lock")
    assert code == 0 and data["status"] == "queued" and data["knox_results"] is None
    job = Job.objects.get(pk=data["job"])
    assert (job.kind, job.func, job.params["flags"]["autoLock"]) == ("guard.upload", "guard.tasks.run_upload", True)
    assert list(dry) == list(data)  # the same keys, so scripts read both alike


def test_guard_upload_refuses_an_unknown_or_unready_account_with_exit_2(offline_account):
    KnoxAccount.objects.create(name="Bare", environment=KnoxAccount.Environment.SANDBOX)
    code, data = run_upload_command(str(SAMPLE), "--account", "Nobody", "--wait")
    assert code == 2 and "There is no Knox account named “Nobody”" in data["error"] and data["status"] == "refused"
    code, data = run_upload_command(str(SAMPLE), "--account", "Bare", "--auto-accept")
    assert code == 2 and "“Bare” is not ready for Knox Guard" in data["error"] and data["knox_results"] is None
    assert not Job.objects.exists() and not Upload.objects.exists()


@pytest.mark.slow
def test_the_real_guard_upload_command_stores_knox_s_results(knox_sandbox, tmp_path):
    """`manage.py guard_upload --json --wait` as a shell runs it: its own process and database file, no qcluster.
    One device of the file is already in Knox Guard: the upload ends partial (exit 1) and Knox Guard's per-device
    results, read by the process after the upload, name it."""
    env = child_env(tmp_path, knox_sandbox)
    migrated_database(tmp_path / "cli.sqlite3")
    imported = run_manage(env, "import_sandbox_account", str(knox_sandbox.credentials_path.parent))
    assert imported.returncode == 0, imported.stderr
    existing = knox_sandbox.credentials["guard"]["devices"][0]["deviceUid"]
    fresh = fresh_imeis(2, "35872000")
    path = write_csv(tmp_path, [*fresh, existing])
    done = run_manage(env, "guard_upload", str(path), "--account", "Sandbox", "--json", "--wait")
    assert done.returncode == 1, done.stderr
    data = json.loads(done.stdout)
    assert (data["status"], data["succeeded"], data["failed"]) == ("partial", 2, 1)
    found = data["knox_results"]
    assert (found["succeeded"], found["failed"], found["error"]) == (2, 1, None)
    assert found["failures"][0]["identifier"] == existing and found["failures"][0]["row"] == 4
    upload_id = data["knox_uploads"][0]["upload_id"]
    assert {d["deviceUid"] for d in sandbox_state(knox_sandbox)["guard"]["uploads"][upload_id]["devices"]} == {
        *fresh, existing,
    }  # fmt: skip
    unknown = run_manage(env, "guard_upload", str(path), "--account", "Nobody")
    assert unknown.returncode == 2 and "There is no Knox account named “Nobody”" in unknown.stderr


# --- real processes (also used by test_engine) -----------------------------------------------------------------
