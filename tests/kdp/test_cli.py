"""The command-line upload, delete and job status commands, against the in-process sandbox (real HTTP over
loopback), plus one real `manage.py kdp_upload` process with its own SQLite file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kdp.models import Device, TransactionDevice
from portal.models import Job, KnoxAccount, Upload
from tests.base import child_env, fresh_imeis, migrated_database, run_command, run_json, run_manage
from tests.kdp.helpers import SAMPLES, imei_csv

pytestmark = pytest.mark.usefixtures("quick_kdp")  # tests/conftest.py: no pacing, first poll sooner

MIXED = SAMPLES / "kdp-upload-mixed.csv"
MIXED_VALID = ["359221145350335", "351121670763365", "355488840597445", "358060368779353"]


def upload_args(path: Path, customer_id: str, *more: str) -> list[str]:
    return [str(path), "--account", "Sandbox", "--customer", customer_id, *more]


def write_csv(tmp_path: Path, imeis: list[str], name: str = "devices.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(imei_csv(imeis))
    return path


def test_it_uploads_the_mixed_sample_and_waits(customer):
    alias = customer.aliases.first().name
    code, data = run_json(
        "kdp_upload",
        *upload_args(MIXED, customer.customer_id, "--wait", "--profile-alias", alias, "--order-no", "PO-7"),
        "--order-date",
        "2025-03-31",
    )
    assert code == 0, data
    assert data["kind"] == "kdp.upload" and data["status"] == "succeeded" and data["error"] is None
    figures = {k: data[k] for k in ("rows", "valid", "invalid", "duplicate", "skipped", "conflicts", "submitted")}
    assert figures == {
        "rows": 9, "valid": 4, "invalid": 5, "duplicate": 1, "skipped": 1, "conflicts": 0, "submitted": 4,
    }  # fmt: skip
    assert (data["succeeded"], data["failed"], data["failures"]) == (4, 0, [])
    assert (data["account"], data["customer"], data["file"]) == ("Sandbox", customer.customer_id, MIXED.name)
    assert [p["row"] for p in data["problems"]] == [6, 7, 8, 9, 11]
    job = Job.objects.get(pk=data["job"])
    assert job.params["order_time"] == 1743379200 and job.params["profile_alias"] == alias
    devices = Device.objects.filter(identifier__in=MIXED_VALID)
    assert set(devices.values_list("state", "customer", "profile_alias")) == {
        (Device.State.REGISTERED, customer.pk, alias)
    }


def test_it_reports_knox_refusals_per_device_and_exits_1(customer, knox_sandbox, tmp_path):
    theirs = knox_sandbox.credentials["second_reseller"]["device_ids"][0]  # an IMEI another reseller owns
    path = write_csv(tmp_path, [*fresh_imeis(2, "35700000"), theirs])
    code, data = run_json("kdp_upload", *upload_args(path, customer.customer_id, "--wait"))
    assert code == 1
    assert data["status"] == "partial" and (data["succeeded"], data["failed"]) == (2, 1)
    failure = data["failures"][0]
    assert failure["identifier"] == theirs and failure["code"] == "4092100" and failure["row"] == 4
    assert "already registered" in failure["reason"]


def test_human_output_names_the_failed_device(customer, knox_sandbox, tmp_path):
    theirs = knox_sandbox.credentials["second_reseller"]["device_ids"][1]
    path = write_csv(tmp_path, [*fresh_imeis(1, "35710000"), theirs])
    code, out, err = run_command("kdp_upload", *upload_args(path, customer.customer_id, "--wait"))
    assert code == 1
    assert "Status: partial" in out and theirs in out and "4092100" in out
    assert "running it in this process" in err and "1 of 2 devices failed" in err


def test_a_dry_run_submits_nothing(customer):
    code, data = run_json("kdp_upload", *upload_args(MIXED, customer.customer_id, "--dry-run", "--wait"))
    assert code == 0
    assert data["job"] is None and data["status"] == "dry-run"
    assert (data["rows"], data["valid"], data["invalid"], data["submitted"]) == (9, 4, 5, 0)
    assert data["problems"][0] == {
        "row": 6, "value": "359221145350336", "status": "invalid",
        "reason": "wrong check digit: the last digit should be 5, not 6; check the IMEI for a typo",
    }  # fmt: skip
    assert not Job.objects.filter(kind__in=["kdp.upload", "kdp.delete"]).exists()
    assert not Upload.objects.exists()  # the staging is discarded
    assert not Device.objects.exists()

    code, out, _ = run_command("kdp_upload", *upload_args(MIXED, customer.customer_id, "--dry-run"))
    assert code == 0
    assert "nothing was submitted" in out and "4 valid" in out and "row 11" in out

    # The same keys as the summary of a submitted job, so scripts read both alike.
    _, queued = run_json("kdp_upload", *upload_args(MIXED, customer.customer_id))
    assert list(data) == list(queued)


def test_without_wait_it_queues_the_job_and_returns(customer):
    code, data = run_json("kdp_upload", *upload_args(MIXED, customer.customer_id))
    assert code == 0
    assert data["status"] == "queued" and data["job"] and data["submitted"] == 4
    job = Job.objects.get(pk=data["job"])
    assert job.kind == "kdp.upload" and job.status == Job.Status.QUEUED and job.func == "kdp.tasks.run_transfer"
    assert job.created_by is None
    assert Upload.objects.get(job=job).status == Upload.Status.SUBMITTED
    assert not TransactionDevice.objects.exists()  # nothing sent: a worker will do it


@pytest.fixture
def offline_account(db):
    """An account that looks ready for KDP; for checks that fail before anything would call Knox."""
    account = KnoxAccount(name="Offline", environment=KnoxAccount.Environment.SANDBOX, reseller_id="4700000000")
    account.public_key = "not-used"
    account.set_secret("private_key", "not-used")
    account.set_secret("client_identifier", "not-used")
    account.save()
    return account


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([str(MIXED), "--account", "Nobody"], "There is no Knox account named “Nobody”; the accounts are: “Offline”."),
        ([str(MIXED), "--account", "Offline", "--order-date", "31/03/2025"], "must be written YYYY-MM-DD"),
        (["missing.csv", "--account", "Offline"], "Cannot read missing.csv: there is no such file."),
    ],
)
def test_unusable_input_exits_2_with_a_sentence(offline_account, argv, message):
    code, out, err = run_command("kdp_upload", *argv, "--customer", "4650161365", "--wait")
    assert code == 2 and message in err and out == ""
    code, data = run_json("kdp_upload", *argv, "--customer", "4650161365", "--wait")
    assert code == 2 and message in data["error"] and data["status"] == "refused" and data["job"] is None
    assert not Job.objects.exists() and not Upload.objects.exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--customer", "4000000000"], "has no customer with Knox customer ID 4000000000 even after refreshing"),
        (["--profile-alias", "Lobby"], "has no KME profile alias “Lobby”; its aliases are: “Default”"),
    ],
)
def test_an_unknown_customer_or_alias_exits_2_after_a_refresh(customer, argv, message):
    options = {"--customer": customer.customer_id, "--profile-alias": ""}
    options.update(zip(argv[::2], argv[1::2], strict=True))
    code, _, err = run_command(
        "kdp_upload", str(MIXED), "--account", "Sandbox", *[x for kv in options.items() for x in kv]
    )
    assert code == 2 and message in err
    assert not Job.objects.filter(kind="kdp.upload").exists()
    assert Job.objects.filter(kind="kdp.customers").count() == 2  # the fixture's sync, then the command's


def test_a_file_of_scientific_notation_is_refused(customer):
    code, data = run_json("kdp_upload", *upload_args(SAMPLES / "kdp-upload-scientific.csv", customer.customer_id))
    assert code == 2
    assert data["status"] == "refused" and data["job"] is None and data["valid"] == 0
    assert "scientific notation" in data["error"] and "row 2" in data["error"]
    assert len(data["problems"]) == data["rows"] == 4
    assert not Job.objects.filter(kind="kdp.upload").exists() and not Upload.objects.exists()


def test_an_account_without_kdp_credentials_is_refused(customer):
    KnoxAccount.objects.create(name="Bare", environment=KnoxAccount.Environment.SANDBOX)
    code, _, err = run_command("kdp_upload", str(MIXED), "--account", "Bare", "--customer", customer.customer_id)
    assert code == 2
    assert "not ready for KDP" in err and "Client Identifier" in err


def test_a_pending_customer_is_refused_before_anything_is_sent(synced):
    from kdp.models import Customer

    pending = Customer.objects.get(account=synced, status="Pending")
    code, _, err = run_command("kdp_upload", *upload_args(MIXED, pending.customer_id, "--wait"))
    assert code == 2 and "pending verification" in err


def test_an_unknown_customer_is_looked_up_in_knox_first(sandbox_account, knox_sandbox):
    customer_id = knox_sandbox.credentials["customers"][0]["customerId"]  # not synced yet
    code, data = run_json("kdp_upload", *upload_args(MIXED, customer_id, "--dry-run"))
    assert code == 2 and "No customers are synced" in data["error"]  # a dry run never calls Knox
    code, data = run_json("kdp_upload", *upload_args(MIXED, customer_id))
    assert code == 0 and data["status"] == "queued" and data["customer"] == customer_id
    assert Job.objects.get(kind="kdp.customers").status == Job.Status.SUCCEEDED


def test_it_deletes_devices_and_waits(customer, tmp_path):
    imeis = fresh_imeis(3, "35720000")
    path = write_csv(tmp_path, imeis)
    assert run_json("kdp_upload", *upload_args(path, customer.customer_id, "--wait"))[0] == 0
    code, data = run_json("kdp_delete", *upload_args(path, customer.customer_id, "--wait"))
    assert code == 0, data
    assert data["kind"] == "kdp.delete" and data["status"] == "succeeded" and data["succeeded"] == 3
    assert set(Device.objects.filter(identifier__in=imeis).values_list("state", flat=True)) == {Device.State.DELETED}
    # job_status prints the very same summary for the finished job
    code, again = run_json("job_status", str(data["job"]))
    assert code == 0 and again == data


def test_job_status_reports_a_finished_partial_job(customer, knox_sandbox, tmp_path):
    theirs = knox_sandbox.credentials["second_reseller"]["device_ids"][2]
    path = write_csv(tmp_path, [*fresh_imeis(1, "35730000"), theirs])
    _, data = run_json("kdp_upload", *upload_args(path, customer.customer_id, "--wait"))
    code, status = run_json("job_status", str(data["job"]), "--wait")
    assert code == 1
    assert status["status"] == "partial" and status["failures"][0]["code"] == "4092100"
    assert status["started_at"] and status["finished_at"] and status["created_by"] is None
    code, out, _ = run_command("job_status", f"#{data['job']}")
    assert code == 1 and "Status: partial" in out


def test_job_status_of_a_queued_job_exits_0(db):
    job = Job.objects.create(kind="guard.lock", title="Lock 3 devices", total=3)
    code, data = run_json("job_status", str(job.pk))
    assert code == 0
    assert data["status"] == "queued" and data["kind"] == "guard.lock" and "failures" not in data


def test_job_status_of_an_unknown_job_exits_2(db):
    code, _, err = run_command("job_status", "999999")
    assert code == 2 and "There is no job 999999" in err
    code, data = run_json("job_status", "999999")
    assert code == 2 and data["job"] is None and "There is no job 999999" in data["error"]
    assert run_command("job_status", "twelve")[0] == 2


@pytest.mark.slow
def test_the_real_command_uploads_against_the_sandbox(knox_sandbox, tmp_path):
    """`manage.py kdp_upload --json --wait` as a shell runs it: its own process, database file and no qcluster."""
    env = child_env(tmp_path, knox_sandbox)
    migrated_database(tmp_path / "cli.sqlite3")
    imported = run_manage(env, "import_sandbox_account", str(knox_sandbox.credentials_path.parent))
    assert imported.returncode == 0, imported.stderr
    customer_id = next(c["customerId"] for c in knox_sandbox.credentials["customers"] if c["status"] == "Verified")
    done = run_manage(
        env, "kdp_upload", str(MIXED), "--account", "Sandbox", "--customer", customer_id, "--json", "--wait"
    )
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert (data["status"], data["rows"], data["valid"], data["invalid"]) == ("succeeded", 9, 4, 5)
    assert (data["submitted"], data["succeeded"], data["failed"]) == (4, 4, 0)
    refused = run_manage(env, "kdp_upload", str(MIXED), "--account", "Nobody", "--customer", customer_id)
    assert refused.returncode == 2 and "There is no Knox account named “Nobody”" in refused.stderr


# --- a file with a customer column -----------------------------------------------------------------------------

MULTI = SAMPLES / "kdp-upload-multi-customer.csv"


def test_a_file_with_a_customer_column_needs_no_customer_and_queues_a_job_per_customer(synced):
    from kdp.models import Customer

    contoso = Customer.objects.get(account=synced, name="Contoso Logistics")
    fabrikam = Customer.objects.get(account=synced, name="Fabrikam Health")
    alias = contoso.aliases.order_by("name").first().name
    code, data = run_json(
        "kdp_upload", str(MULTI), "--account", "Sandbox", "--skip-unusable-customers", "--wait",
        "--profile-alias", f"Contoso Logistics={alias}",
    )  # fmt: skip
    assert code == 0, data
    assert data["status"] == "succeeded" and len(data["jobs"]) == 2
    by_customer = {j["customer"]: j for j in data["jobs"]}
    assert (by_customer[contoso.customer_id]["succeeded"], by_customer[fabrikam.customer_id]["succeeded"]) == (3, 2)
    problems = {c["name"] or ", ".join(c["written_as"]): c["problem"] for c in data["customers"] if c["problem"]}
    assert set(problems) == {"Pending Verification Co", "Initech", ""}
    imeis = [line.split(",")[0] for line in MULTI.read_text().splitlines()[1:]]
    devices = dict(Device.objects.filter(identifier__in=imeis).values_list("identifier", "customer__name"))
    assert devices == {**dict.fromkeys(imeis[:3], "Contoso Logistics"), **dict.fromkeys(imeis[3:5], "Fabrikam Health")}
    assert set(Device.objects.filter(customer=contoso).values_list("profile_alias", flat=True)) == {alias}
    assert set(Device.objects.filter(customer=fabrikam).values_list("profile_alias", flat=True)) == {""}


def test_customers_that_cannot_be_used_stop_the_command_unless_skipped(synced):
    code, _, err = run_command("kdp_upload", str(MULTI), "--account", "Sandbox")
    assert code == 2
    assert "The rows of 3 customers of the file cannot be sent" in err and "--skip-unusable-customers" in err
    assert "“Initech” (1 row): " in err and "pending verification" in err
    assert not Job.objects.filter(kind="kdp.upload").exists() and not Upload.objects.exists()


def test_a_dry_run_lists_the_customers_of_the_file(synced):
    code, out, _ = run_command("kdp_upload", str(MULTI), "--account", "Sandbox", "--dry-run")
    assert code == 0
    assert "Customers in the file:" in out and "Contoso Logistics (" in out and ": 3 rows" in out
    assert not Job.objects.filter(kind="kdp.upload").exists() and not Upload.objects.exists()


def test_neither_customer_nor_column_or_both_are_refused_with_the_reason(synced, tmp_path):
    from kdp.models import Customer

    plain = write_csv(tmp_path, fresh_imeis(2, "35877794"))
    code, _, err = run_command("kdp_upload", str(plain), "--account", "Sandbox")
    assert code == 2 and "has no customer column: give --customer CUSTOMER_ID, or add a “Customer” column" in err
    customer = Customer.objects.filter(account=synced, status="Verified").first()
    code, _, err = run_command("kdp_upload", str(MULTI), "--account", "Sandbox", "--customer", customer.customer_id)
    assert code == 2 and "has a customer column, so each row names its customer; leave out --customer" in err
    assert not Job.objects.filter(kind="kdp.upload").exists() and not Upload.objects.exists()


def test_an_alias_for_a_customer_not_in_the_file_is_refused(synced):
    code, _, err = run_command(
        "kdp_upload", str(MULTI), "--account", "Sandbox", "--skip-unusable-customers",
        "--profile-alias", "TOP Oil=Default",
    )  # fmt: skip
    assert code == 2 and "--profile-alias names the customer “TOP Oil”, which has no rows to send" in err
    assert not Job.objects.filter(kind="kdp.upload").exists()


def test_kdp_delete_refuses_a_customer_the_records_contradict_and_deletes_from_the_recorded_ones(synced, tmp_path):
    from kdp.models import Customer

    contoso = Customer.objects.get(account=synced, name="Contoso Logistics")
    fabrikam = Customer.objects.get(account=synced, name="Fabrikam Health")
    imeis = fresh_imeis(3, "35877799")
    for customer, part in ((fabrikam, imeis[:2]), (contoso, imeis[2:])):
        assert (
            run_command("kdp_upload", *upload_args(write_csv(tmp_path, part, "u.csv"), customer.customer_id, "--wait"))[
                0
            ]
            == 0
        )
    path = write_csv(tmp_path, imeis, "d.csv")
    code, _, err = run_command("kdp_delete", *upload_args(path, contoso.customer_id))
    assert code == 2 and "2 of the 3 devices are registered to another customer than Contoso Logistics" in err
    assert "(--recorded-customers)" in err and not Job.objects.filter(kind="kdp.delete").exists()
    code, data = run_json("kdp_delete", str(path), "--account", "Sandbox", "--recorded-customers", "--wait")
    assert code == 0, data
    assert sorted((j["customer"], j["succeeded"]) for j in data["jobs"]) == sorted(
        [(fabrikam.customer_id, 2), (contoso.customer_id, 1)]
    )
    assert set(Device.objects.filter(identifier__in=imeis).values_list("state", flat=True)) == {Device.State.DELETED}
