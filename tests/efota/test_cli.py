"""`efota_register_group` and `efota_license_info` against the in-process sandbox, plus one real `manage.py`
process with its own SQLite file (as a shell runs it)."""

from __future__ import annotations

import json

import pytest

from efota.models import EfotaCall, EfotaGroup, EfotaLicence
from portal.models import AuditEvent, Job, KnoxAccount
from tests.base import child_env, migrated_database, run_command, run_json, run_manage
from tests.efota.helpers import efota_world


@pytest.fixture
def efota(sandbox_account, knox_sandbox, settings):
    return efota_world(knox_sandbox, settings)


def test_it_registers_a_group(efota):
    code, data = run_json(
        "efota_register_group", "--account", "Sandbox", "--group", "kiosks", "--license", efota["license"],
        "--customer", efota["customer_id"],
    )  # fmt: skip
    assert code == 0, data
    assert data["ok"] is True and (data["code"], data["error"]) == (None, None)
    assert (data["account"], data["group"], data["license"], data["customer"]) == (
        "Sandbox", "KIOSKS", efota["license"], efota["customer_id"]
    )  # fmt: skip
    assert data["status"] == "registered" and data["job_status"] == "succeeded"
    job = Job.objects.get(pk=data["job"])
    assert job.kind == "efota.register" and job.created_by is None
    assert EfotaGroup.objects.get(group_id="KIOSKS").status == EfotaGroup.Status.REGISTERED
    assert EfotaCall.objects.get().operation == "groupRegister"
    assert AuditEvent.objects.filter(action="efota.register_group", actor_name="system").exists()

    # Human output; the account's one known customer ID is used when --customer is left out.
    code, out, err = run_command(
        "efota_register_group", "--account", "Sandbox", "--group", "kiosks", "--license", efota["license"]
    )
    assert code == 0 and "Group KIOSKS is registered to" in out
    assert f"customer ID {efota['customer_id']} (the only one on record" in err


def test_an_expired_licence_exits_1_with_the_fud_code_in_words(efota):
    args = ["--account", "Sandbox", "--license", efota["expired_license"], "--customer", efota["customer_id"]]
    code, data = run_json("efota_register_group", "--group", "G2", *args)
    assert code == 1
    assert data["ok"] is False and data["code"] == "FUD_3018" and "not active" in data["error"]
    assert data["status"] == "failed"

    code, data = run_json("efota_license_info", *args)
    assert code == 1
    assert data["ok"] is False and data["code"] == "FUD_3018" and "renew it or choose another licence" in data["error"]
    assert data["max_devices"] is None and data["license"] == efota["expired_license"]
    code, out, err = run_command("efota_license_info", *args)
    assert code == 1 and "FUD_3018" in out and "The licence is not active" in err


def test_it_describes_a_licence(efota):
    code, data = run_json("efota_license_info", "--account", "Sandbox", "--license", efota["license"],
                          "--customer", efota["customer_id"])  # fmt: skip
    assert code == 0, data
    assert data["ok"] is True and data["max_devices"] == 100 and data["expired"] is False
    record = EfotaLicence.objects.get(key=efota["license"])
    assert data["expiration_date"] == record.expiration_date.isoformat()
    code, out, _ = run_command(
        "efota_license_info", "--account", "Sandbox", "--license", efota["license"]
    )  # customer known now
    assert code == 0 and "Max devices: 100" in out and "Expired:     no" in out


def test_a_group_registered_to_another_licence_is_not_sent_again(efota):
    args = ["--account", "Sandbox", "--group", "moving", "--customer", efota["customer_id"]]
    assert run_command("efota_register_group", *args, "--license", efota["license"])[0] == 0
    code, data = run_json("efota_register_group", *args, "--license", efota["second_license"])
    assert code == 2 and "is already registered to" in data["error"] and "Groups page" in data["error"]
    assert EfotaGroup.objects.get(group_id="MOVING").licence == efota["license"]
    assert Job.objects.count() == 1


@pytest.mark.parametrize(
    ("command", "argv", "message"),
    [
        ("efota_license_info", ["--account", "Nobody", "--license", "L"], "There is no Knox account named “Nobody”"),
        ("efota_license_info", ["--account", "Sandbox", "--license", "é" * 50 + "x", "--customer", "C"],
         "The licence is 101 bytes in UTF-8; E-FOTA allows 100 bytes"),
        ("efota_license_info", ["--account", "Sandbox", "--license", "L"], "Give the E-FOTA customer ID with --customer"),
        ("efota_register_group", ["--account", "Sandbox", "--group", "é" * 25 + "x", "--license", "L", "--customer", "C"],
         "The group ID is 51 bytes in UTF-8; E-FOTA allows 50 bytes"),
        ("efota_register_group", ["--account", "Bare", "--group", "G", "--license", "L", "--customer", "C"],
         "not ready for E-FOTA: it still needs the E-FOTA client ID and secret; the E-FOTA mdmId"),
    ],
)  # fmt: skip
def test_unusable_input_exits_2_and_sends_nothing(efota, command, argv, message):
    KnoxAccount.objects.create(name="Bare", environment="sandbox")
    code, out, err = run_command(command, *argv)
    assert code == 2 and message in err and out == ""
    code, data = run_json(command, *argv)
    assert code == 2 and data["ok"] is False and message in data["error"]
    assert not EfotaCall.objects.exists() and not Job.objects.exists()
    assert not EfotaGroup.objects.exists() and not EfotaLicence.objects.exists()


@pytest.mark.slow
def test_the_real_commands_against_the_sandbox(knox_sandbox, tmp_path):
    """`manage.py efota_register_group --json` and `efota_license_info --json` in their own processes, database
    file and no qcluster."""
    efota = knox_sandbox.credentials["efota"]
    env = child_env(tmp_path, knox_sandbox)
    migrated_database(tmp_path / "cli.sqlite3")
    imported = run_manage(env, "import_sandbox_account", str(knox_sandbox.credentials_path.parent))
    assert imported.returncode == 0, imported.stderr
    group = ["--group", "cli-group", "--license", efota["license"], "--customer", efota["customer_id"]]
    done = run_manage(env, "efota_register_group", "--account", "Sandbox", *group, "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert (data["ok"], data["group"], data["status"]) == (True, "CLI-GROUP", "registered")
    info = run_manage(
        env, "efota_license_info", "--account", "Sandbox", "--license", efota["expired_license"], "--json"
    )
    assert info.returncode == 1, info.stderr
    data = json.loads(info.stdout)
    assert data["code"] == "FUD_3018" and "not active" in data["error"] and data["customer"] == efota["customer_id"]
