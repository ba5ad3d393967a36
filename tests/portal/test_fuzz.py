"""Hostile input (issue 8): every form field and query parameter of the portal's views, fuzzed with Hypothesis.

Every URL pattern of portal, kdp, guard and efota (walked as test_access walks them) has a spec below: the
parameter names its forms and `request.GET` reads take, a few good values for them, the objects its URL can
point at, and the HTMX targets it answers with a fragment. Each example fills the parameters with hostile values
(huge and negative integers, NUL bytes, digits that `str.isdigit()` accepts but `int()` refuses, SQL- and
template-like text, very long strings, impossible and out-of-range dates, repeated parameters, broken files),
sometimes all of them, sometimes one among otherwise good values so the deeper checks run too. Whatever arrives,
the answer is 200/204/302/400/403/404/405, nothing raises, and downloads stream to the end. Random examples can
miss a single bad value, so test_edge_values_of_every_parameter also tries the likeliest breakers (the day after
9999-12-31, ids past 2**63, "²") on every parameter of every view, deterministically. FUZZ_SCALE=10 searches deeper.

Requests are made as the admin (tests/base.py's persona), so permission checks pass and validation is what gets
exercised. Nothing reaches Knox: the accounts point at a closed loopback port, `responses` refuses every outgoing
request before it leaves the process, and a job is handed to django-q2 only on commit, which a test transaction
never reaches (the view and its form run; the queued task does not).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import requests
import responses
from django.conf import settings as django_settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import transaction
from django.test import Client, override_settings
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.django import TestCase as HypothesisTestCase

from portal.knox.auth import parse_keys_json
from portal.models import AuditEvent, Job, KnoxAccount, Upload, UploadRow
from tests.base import BaseTestCase, make_user
from tests.keys import keys_json
from tests.portal.helpers import OUR_NAMESPACES, concrete, iter_patterns

ALLOWED = {200, 204, 302, 400, 403, 404, 405}
NOWHERE = "http://127.0.0.1:9"  # the discard port: closed, and `responses` refuses before a socket opens anyway
IMEI = "359221145350335"
SERIAL = "R58N123ABCD"
CUSTOMER = "EEEE4444-FF55-AA66-BB77-CCCCCC888888"
LICENCE = "EFOTA1-fff555-ggg666-hh77"

# --- hostile values -----------------------------------------------------------------------------------------

NUMBERS = [
    "0", "-0", "-1", "+1", " 1 ", "1.5", "1e3", "1e309", "0x10", "1_000", "NaN", "inf", "-inf",
    str(2**31), str(2**63 - 1), str(2**63), str(2**64 + 1), "9" * 40, "-" + "9" * 40,
]  # fmt: skip
# Digits that are not ASCII: str.isdigit() accepts the superscripts, which int() refuses; int() reads the Arabic-Indic
# and mathematical ones; the fraction and the numerals are numeric but no digits.
UNICODE_DIGITS = ["²", "³", "¹²³", "½", "١٢٣", "\U0001d7d7", "٣:²", "x:²", "5:²", IMEI + ":²", "Ⅻ", "\u3007"]
DATES = [
    "9999-12-31", "9999-12-30", "0001-01-01", "0001-01-02", "0000-00-00", "2024-02-30", "2024-13-01", "31/12/2024",
    "12/31/2024", "2024-1-1", "20240101", "2024-01-01T25:61:61", "yesterday", "10000-01-01", "-2024-01-01",
    "2024-01-01\x00",
]  # fmt: skip
NASTY = [
    "", " ", "\x00", "a\x00b", "1\x00", "%00", "' OR '1'='1", "1; DROP TABLE portal_job; --", '" OR ""="', "\\",
    "%", "_", "../../etc/passwd", "<script>alert(1)</script>", "{{ 7*7 }}", "{% debug %}", "${jndi:ldap://x}",
    "\u202e", "\ufeff", "\uffff", "🙂", "Ω" * 300, "A" * 5000, "x" * 20_000, "\r\n", "null", "None", "true", "[]",
    "{}", "__proto__", "=cmd|' /C calc'!A0", "LOCK 1", "lock", "queued", "problems", "identifier", "oldest",
]  # fmt: skip
HOSTILE_CONSTANTS = NUMBERS + UNICODE_DIGITS + DATES + NASTY
# Text that can be put in a URL or a form: any code point but lone surrogates.
ANY_TEXT = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=60)


# The values most likely to break a typed field, favoured by the fuzz; the first few of each list are also tried on
# every parameter of every view by the edge sweep.
DATE_EDGES = ["9999-12-31", "0001-01-01", "2024-02-30", "10000-01-01", "31/12/2024", "2024-01-01\x00"]
INT_EDGES = [str(2**63), "-" + "9" * 40, "²", "-1", "1.5", "0", "9" * 40, "١٢", "1\x00", " 7 "]
CURSOR_EDGES = [*INT_EDGES[:3], "x:²", IMEI + ":²", *INT_EDGES[3:], ":", "a:b:1", IMEI + ":" + "9" * 40]
TEXT_EDGES = ["\x00", "x" * 20_000, "' OR '1'='1", "²"]
INT_NAMES = {
    "after", "before", "page", "v", "job", "hour", "interval", "time_limit_from", "time_limit_to", "days_limit_from",
    "days_limit_to", "expected", "ids", "customer", "account",
}  # fmt: skip


def edges_for(name: str, *, sweep: bool = False) -> list[str]:
    """The edge values for a parameter, by what its name says it holds; the sweep tries the first few."""
    if "date" in name:
        edges, swept = DATE_EDGES, 3
    elif name == "after":
        edges, swept = CURSOR_EDGES, 5  # kdp's device list pages by "identifier:id"; the others by id
    elif name in INT_NAMES:
        edges, swept = INT_EDGES, 4
    else:
        edges, swept = TEXT_EDGES, 1
    return edges[:swept] if sweep else edges


def hostile_value(name: str = "") -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(edges_for(name)),
        st.sampled_from(HOSTILE_CONSTANTS),
        st.integers(min_value=-(2**80), max_value=2**80).map(str),
        ANY_TEXT,
        st.dates().map(str),
        st.text(alphabet="0123456789-:/ \x00²", max_size=24),
    )


def value_for(name: str, good: tuple[Any, ...] = ()) -> st.SearchStrategy[Any]:
    """One parameter: a single value (good or hostile), or the parameter repeated."""
    single = st.one_of(st.sampled_from(good), hostile_value(name)) if good else hostile_value(name)
    return st.one_of(single, st.lists(single, min_size=2, max_size=4))


FILE_NAMES = [
    "devices.csv", "devices.xlsx", "DEVICES.XLS", "list.tsv", "list.txt", "noextension", "../../etc/passwd.csv",
    "ünïcödé.csv", "a" * 300 + ".csv", "x.csv.exe", ".csv", "con.csv", "x;y=z.csv", "keys.json",
]  # fmt: skip
FILE_CONTENTS = [
    b"",
    b"\x00" * 64,
    f"IMEI,Order No\n{IMEI},PO-1\n".encode(),
    f"Serial Number\n{SERIAL}\nR58N123ABCE\n".encode(),
    b"PK\x03\x04" + b"\x00" * 100,  # the start of a zip (xlsx) and then nothing
    b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\xff" * 100,  # the start of an OLE file (xls) and then nothing
    b"\xef\xbb\xbfIMEI\n=1+1\n@SUM(A1)\n",
    b"Serial Number\n" + "\n".join(["R58N123ABCD"] * 50).encode(),
]


def file_value() -> st.SearchStrategy[Any]:
    """A spreadsheet upload: none, a good one, a truncated or empty one, or any bytes, under any name."""
    content = st.one_of(st.sampled_from(FILE_CONTENTS), st.binary(max_size=300))
    return st.one_of(st.none(), st.builds(SimpleUploadedFile, st.sampled_from(FILE_NAMES), content))


def keys_file_value() -> st.SearchStrategy[Any]:
    """keys.json: the real thing, JSON with hostile members, or any bytes."""
    member = st.one_of(hostile_value(), st.integers(), st.none(), st.lists(st.integers(), max_size=2))
    doc = st.fixed_dictionaries({}, optional={"Private": member, "Public": member, "Identifier": member})
    content = st.one_of(
        st.just(keys_json()),
        doc.map(lambda d: json.dumps(d).encode()),
        st.sampled_from([b"[]", b"null", b'"x"', b"1e999", b"{" * 1000, b'{"Private": "' + b"A" * 70_000 + b'"}']),
        st.binary(max_size=200),
    )
    return st.one_of(st.none(), st.builds(SimpleUploadedFile, st.sampled_from(FILE_NAMES), content))


# --- what is fuzzed -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    """One view: its URL name, method and inputs. Good values starting with "@" name an object of the world."""

    name: str
    method: str = "get"
    params: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # name -> good values
    files: Mapping[str, str] = field(default_factory=dict)  # name -> "spreadsheet" or "keys"
    objects: tuple[str, ...] = ()  # world objects the URL's pk may point at
    targets: tuple[str, ...] = ()  # HX-Target values answered with a fragment
    fmt: bool = False  # the URL ends in export.<str:fmt>
    examples: int = 15

    @property
    def label(self) -> str:
        return f"{self.name.replace(':', '_')}_{self.method}"


ACCOUNT = ("@acme", "@half")
HOUR = ("0", "3", "23")
DATE = ("2024-01-01", "2030-12-31")
PREVIEW = {"status": ("", "problems", "valid", "invalid"), "after": ("0", "1", "50")}
KDP_DEVICE_FILTER = {
    "q": ("3592", IMEI, "R58"), "account": ACCOUNT, "customer": ("@customer",), "state": ("registered", "pending"),
    "model": ("SM-G991B",), "job": ("@kdp_job",), "date_from": DATE, "date_to": DATE,
    "sort": ("newest", "oldest", "identifier"), "after": ("1", f"{IMEI}:1", "@device"),
}  # fmt: skip
GUARD_DEVICE_FILTER = {
    "q": ("3500", "LOAN"), "account": ACCOUNT, "state": ("Enrolled", "Locked"), "licence": ("KG-LIC-1",),
    "approve_id": ("LOAN-0001",), "after": ("1", "@guard_enrolled"),
}  # fmt: skip
GUARD_SELECTION = {
    **GUARD_DEVICE_FILTER, "scope": ("selected", "matching"), "ids": ("@guard_enrolled", "@guard_locked", "1"),
}  # fmt: skip
ACTION_FIELDS = {
    "action": ("approve", "reject", "lock", "unlock", "blink", "stop-blink", "message", "complete", "delete"),
    "message": ("Please call us.",), "email": ("ops@example.org",), "tel": ("+44 20 7946 0000",),
    "interval": ("3", "60", "3600"), "time_limit_from": ("0", "8", "23"), "time_limit_to": ("0", "20", "23"),
    "days_limit_from": ("0", "6"), "days_limit_to": ("0", "6"), "approve_id": ("LOAN-9",), "approve_comment": ("ok",),
}  # fmt: skip
EFOTA_IDS = {"account": ("@acme",), "customer_id": (CUSTOMER,), "licence": (LICENCE, "EFOTA1-other")}
ACCOUNT_FORM = {
    "name": ("Fuzzed", "Acme"), "environment": ("sandbox", "production"), "region": ("eu", "us"),
    "kdp_generation": ("gen2", "gen1"), "auth_mode": ("knox_token", "oauth", "gen1_key"),
    "reseller_id": ("4612345678",), "vendor_id": ("",), "kdp_url": (NOWHERE, "https://kdp.example.org"),
    "kdp_gen1_url": ("",), "guard_url": (NOWHERE,), "efota_url": ("",), "auth_url": ("ftp://x", "javascript:alert(1)"),
    "client_identifier": ("not-real",), "oauth_client_id": ("cid",), "oauth_client_secret": ("s",),
    "oauth_scopes": ("kdp.devices",), "gen1_api_key": ("k",), "efota_client_id": ("e",),
    "efota_client_secret": ("s",), "efota_mdm_id": ("d1e2f3g4h5",), "is_active": ("on", ""),
    "clear_secrets": ("private_key", "gen1_api_key"),
}  # fmt: skip
# Query strings no form would send: broken percent-escapes, overlong UTF-8, empty names, a parameter given thrice.
RAW_QUERIES = [
    "a=%FF%FE", "%00=%00", "=&=&&", "after=%C0%AF", "q=%", "page=1&page=2&page=%ZZ", "before=%F0%9F%99%82",
    "a[]=1&a[]=2", ";;;", "date_from=%2B10000-01-01", "x=" + "%41" * 3000,
]  # fmt: skip
HX = ("upload-status", "preview-rows", "bulk-action", "job-results", "device-table", "fu-status", "nonsense")

SPECS = [
    # portal
    Spec("portal:dashboard", targets=("recent-jobs",), examples=5),
    Spec(
        "portal:jobs",
        params={"kind": ("kdp.", "guard.lock"), "status": ("queued", "refused"), "q": ("Lock",), "before": ("1", "2")},
    ),
    Spec("portal:job_detail", objects=("kdp_job", "guard_job", "efota_job"), examples=5),
    Spec(
        "portal:job_progress",
        params={"v": ("0", "1", "@version")},
        objects=("kdp_job", "queued_job"),
        targets=("job-progress",),
    ),
    Spec("portal:job_cancel", "post", objects=("queued_job", "kdp_job"), examples=5),
    Spec(
        "portal:lookup_result",
        objects=(
            "firmware_lookup",
            "licence_lookup",
            "abnormal_lookup",
            "connection_test",
            "uploads_lookup",
            "kdp_job",
        ),
        examples=10,
    ),
    Spec(
        "portal:audit",
        params={
            "actor": ("alice", "ALICE"),
            "action": ("account.", "kdp"),
            "date_from": DATE,
            "date_to": DATE,
            "q": ("Acme", "@acme"),
            "before": ("1", "2", "@event"),
        },
        examples=30,
    ),
    Spec("portal:accounts", examples=3),
    Spec("portal:my_settings", examples=3),
    Spec("portal:my_settings", method="post", params={"email_on_job_end": ("on", "")}, examples=5),
    Spec(
        "portal:account_detail",
        params={"job": ("@connection_test", "@firmware_lookup")},
        objects=("acme", "half"),
        examples=10,
    ),
    Spec("portal:account_create", examples=3),
    Spec("portal:account_create", "post", params=ACCOUNT_FORM, files={"keys_file": "keys"}, examples=30),
    Spec("portal:account_edit", objects=("acme",), examples=3),
    Spec(
        "portal:account_edit",
        "post",
        params=ACCOUNT_FORM,
        files={"keys_file": "keys"},
        objects=("acme", "half"),
        examples=25,
    ),
    Spec("portal:account_keys", "post", files={"keys_file": "keys"}, objects=("half",), examples=20),
    Spec("portal:account_test", "post", objects=("acme", "half"), targets=("test-results",), examples=5),
    # kdp
    Spec("kdp:index", examples=3),
    Spec("kdp:upload", params={"operation": ("upload", "delete")}, examples=5),
    Spec(
        "kdp:upload",
        "post",
        params={"account": ACCOUNT, "operation": ("upload", "delete"), "allow_bad_check_digit": ("on",)},
        files={"file": "spreadsheet"},
    ),
    Spec("kdp:template_xlsx", examples=3),
    Spec("kdp:template_csv", examples=3),
    Spec(
        "kdp:upload_detail",
        params=PREVIEW,
        objects=("kdp_upload", "kdp_delete_upload"),
        targets=("upload-status", "preview-rows"),
    ),
    Spec(
        "portal:upload_row_fix",
        "post",
        params={"value": (IMEI, "351778952866768")},
        objects=("kdp_upload", "guard_action_upload"),
        examples=10,
    ),
    Spec(
        "kdp:upload_restage",
        "post",
        params={"sheet": ("Sheet1",), "device_column": ("IMEI",), "allow_bad_check_digit": ("on",)},
        objects=("kdp_upload",),
    ),
    Spec(
        "kdp:upload_confirm",
        "post",
        params={
            **PREVIEW,
            "customer": ("@customer", "@pending_customer"),
            "profile_alias": ("Default", "Other"),
            "order_no": ("PO-1",),
            "order_date": DATE,
        },
        objects=("kdp_upload", "kdp_delete_upload"),
        examples=30,
    ),
    Spec("kdp:upload_invalid_xlsx", objects=("kdp_upload",), examples=3),
    Spec("kdp:aliases", params={"customer": ("@customer",), "profile_alias": ("Default",)}),
    Spec(
        "kdp:job",
        params={"outcome": ("", "failed", "succeeded"), "after": ("0", "@txdevice")},
        objects=("kdp_job", "reconcile_job"),
        targets=("job-results",),
        examples=20,
    ),
    Spec("kdp:job_retry", "post", objects=("kdp_job", "reconcile_job"), examples=3),
    Spec("kdp:job_report", objects=("kdp_job", "reconcile_job"), examples=5),
    Spec("kdp:devices", params=KDP_DEVICE_FILTER, targets=("device-table",), examples=30),
    Spec("kdp:devices_export", params=KDP_DEVICE_FILTER, fmt=True, examples=15),
    Spec(
        "kdp:devices_delete",
        "post",
        params={
            **KDP_DEVICE_FILTER,
            "scope": ("selected", "matching"),
            "ids": ("@device", "1"),
            "expected": ("1", "0"),
        },
        examples=25,
    ),
    Spec("kdp:device_detail", objects=("device",), examples=3),
    Spec("kdp:customers", examples=3),
    Spec("kdp:customers_refresh", "post", objects=("acme", "half"), examples=5),
    Spec("kdp:transactions", params={"q": ("abc", "@txid"), "before": ("1", "@tx")}, examples=20),
    Spec("kdp:transaction_detail", objects=("tx",), examples=3),
    Spec("kdp:reconcile", examples=3),
    Spec("kdp:reconcile_run", "post", params={"account": ACCOUNT}, examples=5),
    Spec(
        "kdp:reconcile_job",
        params={"drift": ("", "knox_only", "customer"), "q": ("3592", "R58"), "after": (f"knox_only:{IMEI}", "")},
        objects=("reconcile_job", "kdp_job"),
        targets=("differences",),
        examples=10,
    ),
    Spec("kdp:reconcile_schedule", "post", params={"account": ACCOUNT, "hour": HOUR}),
    Spec("kdp:reconcile_unschedule", "post", objects=("kdp_schedule",), examples=5),
    # guard
    Spec("guard:index", examples=3),
    Spec("guard:sync", "post", objects=("acme", "half"), examples=5),
    Spec("guard:schedule", "post", params={"account": ACCOUNT, "hour": HOUR}),
    Spec("guard:unschedule", "post", objects=("guard_schedule",), examples=5),
    Spec("guard:devices", params=GUARD_DEVICE_FILTER, targets=("device-table",), examples=40),
    Spec("guard:devices_export", params=GUARD_DEVICE_FILTER, fmt=True),
    Spec("guard:device_detail", objects=("guard_pending", "guard_enrolled"), examples=3),
    Spec(
        "guard:devices_act",
        params={**GUARD_SELECTION, "action": ACTION_FIELDS["action"]},
        examples=30,
    ),
    Spec(
        "guard:devices_act",
        "post",
        params={**GUARD_SELECTION, **ACTION_FIELDS, "confirmation": ("LOCK 1", "MESSAGE 1", "lock 1")},
        examples=30,
    ),
    Spec(
        "guard:device_act",
        "post",
        params=ACTION_FIELDS,
        examples=40,
        objects=("guard_pending", "guard_enrolled", "guard_locked", "guard_blinked", "guard_rejected"),
    ),
    Spec("guard:bulk_new", examples=3),
    Spec("guard:bulk_new", "post", params={"account": ACCOUNT}, files={"file": "spreadsheet"}),
    Spec(
        "guard:bulk_detail",
        params={**PREVIEW, "action": ACTION_FIELDS["action"], "autoAccept": ("on",), "show": ("refused",)},
        objects=("guard_action_upload", "guard_upload_upload"),
        targets=("upload-status", "preview-rows", "bulk-action"),
    ),
    Spec(
        "guard:bulk_confirm",
        "post",
        params={
            **ACTION_FIELDS,
            "confirmation": ("LOCK 2", "APPROVE 2", "lock 2"),
            "autoAccept": ("on",),
            "autoLock": ("on", ""),
        },
        objects=("guard_action_upload", "guard_upload_upload"),
        examples=30,
    ),
    Spec("guard:bulk_problems", objects=("guard_action_upload",), examples=3),
    Spec(
        "guard:job",
        params={"outcome": ("", "failed", "unknown"), "after": ("0", "@guard_action", "@guard_upload_device")},
        objects=("guard_job", "guard_upload_job", "kdp_job"),
        targets=("job-results", "upload-results"),
    ),
    Spec(
        "guard:job_refresh_results",
        "post",
        objects=("guard_upload_job", "guard_job"),
        targets=("upload-results",),
        examples=5,
    ),
    Spec("guard:job_retry", "post", objects=("guard_job", "kdp_job"), examples=5),
    Spec("guard:job_report", objects=("guard_job",), examples=3),
    Spec("guard:uploads", params={"job": ("@uploads_lookup", "@kdp_job")}, examples=5),
    Spec("guard:upload_new", examples=3),
    Spec(
        "guard:upload_new",
        "post",
        params={
            "account": ACCOUNT,
            "autoAccept": ("on",),
            "autoLock": ("on",),
            "applySimControl": ("on",),
            "enableBlockFactoryReset": ("on",),
        },
        files={"file": "spreadsheet"},
    ),
    Spec("guard:uploads_from_knox", "post", params={"account": ACCOUNT}, examples=10),
    Spec("guard:licences", examples=3),
    # efota
    Spec("efota:index", examples=3),
    Spec("efota:groups", examples=3),
    Spec("efota:group_register", "post", params={**EFOTA_IDS, "group_id": ("fleet-b", "FLEET-A")}, examples=25),
    Spec(
        "efota:group_license_change",
        "post",
        params={"licence": (LICENCE, "EFOTA1-other")},
        objects=("efota_group", "efota_pending_group"),
    ),
    Spec("efota:licences", params={"job": ("@licence_lookup", "@firmware_lookup")}, examples=5),
    Spec("efota:licences", "post", params=EFOTA_IDS, targets=("licence-check",)),
    Spec("efota:firmware", params={"job": ("@firmware_lookup", "@abnormal_lookup")}, examples=5),
    Spec(
        "efota:firmware",
        "post",
        params={**EFOTA_IDS, "model": ("SM-G991B",), "sales_code": ("BTU",), "current": ("", "G991BXXU1")},
        targets=("firmware-result",),
    ),
    Spec("efota:abnormal", params={"job": ("@abnormal_lookup", "@licence_lookup")}, examples=5),
    Spec(
        "efota:abnormal",
        "post",
        params={**EFOTA_IDS, "serials": (SERIAL, f"{SERIAL}, R58N123ABCE")},
        files={"file": "spreadsheet"},
        targets=("abnormal-result",),
        examples=15,
    ),
    Spec("efota:force_update", examples=3),
    Spec(
        "efota:force_update",
        "post",
        params={
            **EFOTA_IDS,
            "model": ("SM-G991B",),
            "sales_code": ("BTU",),
            "target": ("Latest",),
            "network_type": ("WIFIONLY", "ALL"),
            "serials": (SERIAL,),
        },
        files={"file": "spreadsheet"},
        examples=25,
    ),
    Spec("efota:job", objects=("efota_job", "efota_register_job", "kdp_job"), targets=("fu-status",), examples=5),
    Spec("efota:job_status", objects=("efota_job", "kdp_job"), examples=3),
    Spec("efota:job_refresh", "post", objects=("efota_job", "efota_register_job"), targets=("fu-status",), examples=5),
]

# A path pk that names nothing, or that no database integer holds.
BAD_PKS = ("0", str(2**63), "9" * 30)


# --- the world and the fuzzing ------------------------------------------------------------------------------


def build_world(admin: Any) -> dict[str, Any]:
    """One of everything the URLs can point at, with an account ready for KDP, Knox Guard and E-FOTA."""
    from django_q.models import Schedule

    from efota.models import EfotaGroup, EfotaLicence, ForceUpdate, ForceUpdateDevice
    from guard.models import GuardAction, GuardDevice, GuardLicence, GuardUpload, GuardUploadDevice
    from kdp.models import Customer, Device, ProfileAlias, ReconcileItem, Transaction, TransactionDevice

    acme = KnoxAccount(
        name="Acme", environment="sandbox", reseller_id="4612345678", efota_client_id="efota-fuzz",
        efota_mdm_id="d1e2f3g4h5", kdp_url=NOWHERE, kdp_gen1_url=NOWHERE, guard_url=NOWHERE, efota_url=NOWHERE,
        auth_url=NOWHERE,
    )  # fmt: skip
    acme.set_keys(parse_keys_json(keys_json()))
    acme.set_secret("client_identifier", "not-a-real-identifier")
    acme.set_secret("efota_client_secret", "not-a-real-secret")
    acme.save()
    half = KnoxAccount.objects.create(name="Half set up", environment="sandbox", kdp_url=NOWHERE, guard_url=NOWHERE)
    now = timezone.now()
    w: dict[str, Any] = {"acme": acme, "half": half}

    # kdp
    customer = Customer.objects.create(account=acme, customer_id="C1", name="Cust", status="Verified")
    w["customer"] = customer
    w["pending_customer"] = Customer.objects.create(account=acme, customer_id="C2", name="Waiting", status="Pending")
    ProfileAlias.objects.create(customer=customer, name="Default")
    w["kdp_job"] = Job.objects.create(kind="kdp.upload", account=acme, created_by=admin, status=Job.Status.PARTIAL,
                                      total=2, succeeded=1, failed=1, finished_at=now)  # fmt: skip
    w["queued_job"] = Job.objects.create(kind="kdp.delete", account=acme, created_by=admin)
    w["reconcile_job"] = Job.objects.create(kind="kdp.reconcile", account=acme, status=Job.Status.SUCCEEDED)
    ReconcileItem.objects.create(job=w["reconcile_job"], identifier=IMEI, drift=ReconcileItem.Drift.values[0])
    tx = Transaction.objects.create(account=acme, job=w["kdp_job"], sequence=1, operation="upload", generation="gen2",
                                    customer=customer, device_type="IMEI")  # fmt: skip
    w["tx"], w["txid"] = tx, tx.transaction_id
    for n, outcome in enumerate(("succeeded", "failed")):
        w["txdevice"] = TransactionDevice.objects.create(
            transaction=tx, job=w["kdp_job"], identifier=f"35922114535{n:04d}", row_number=n + 1, outcome=outcome
        )
    w["device"] = Device.objects.create(account=acme, identifier=IMEI, kind="imei", imei=IMEI, customer=customer,
                                        state="registered", registered_at=now, last_transaction=tx)  # fmt: skip
    for key, operation in (("kdp_upload", "upload"), ("kdp_delete_upload", "delete")):
        upload = Upload.objects.create(account=acme, operation=operation, filename="f.csv", file="kdp/f.csv",
                                       status=Upload.Status.READY, rows_total=2, valid=1, invalid=1)  # fmt: skip
        UploadRow.objects.create(upload=upload, row_number=1, raw=IMEI, value=IMEI, kind="imei", status="valid")
        UploadRow.objects.create(upload=upload, row_number=2, raw="=1+1", status="invalid", reason="Not an IMEI")
        w[key] = upload
    w["kdp_schedule"] = Schedule.objects.create(func="kdp.tasks.scheduled_reconcile", name="KDP reconcile: account x")

    # guard
    for n, state in enumerate(("Pending", "Enrolled", "Locked", "Blinked", "Rejected"), 1):
        w[f"guard_{state.lower()}"] = GuardDevice.objects.create(
            account=acme, device_uid=f"35000000000{n:04d}", state=state, approve_id=f"LOAN-{n:04d}", licence="KG-LIC-1"
        )
    GuardLicence.objects.create(account=acme, key="KG-LIC-1")
    for key, operation in (("guard_action_upload", "guard"), ("guard_upload_upload", "guard-upload")):
        upload = Upload.objects.create(account=acme, service="guard", operation=operation, filename="g.csv",
                                       file="guard/g.csv", status=Upload.Status.READY, rows_total=2, valid=2)  # fmt: skip
        for row in (1, 2):
            UploadRow.objects.create(upload=upload, row_number=row, raw=f"3500000000000{row}", status="valid")
        w[key] = upload
    w["guard_job"] = Job.objects.create(kind="guard.lock", account=acme, status=Job.Status.PARTIAL, total=2,
                                        succeeded=1, failed=1, finished_at=now,
                                        params={"action": "lock", "devices": [w["guard_enrolled"].pk],
                                                "action_params": {"message": "Pay", "tel": "+44 1"}})  # fmt: skip
    w["guard_action"] = GuardAction.objects.create(account=acme, job=w["guard_job"], device=w["guard_enrolled"],
                                                   device_uid="350000000000002", action="lock", outcome="failed")  # fmt: skip
    w["guard_schedule"] = Schedule.objects.create(func="guard.tasks.scheduled_sync", name="Knox Guard sync: account x")
    w["guard_upload_job"] = Job.objects.create(kind="guard.upload", account=acme, status=Job.Status.PARTIAL, total=2,
                                               params={"upload": w["guard_upload_upload"].pk, "flags": {}})  # fmt: skip
    part = GuardUpload.objects.create(account=acme, job=w["guard_upload_job"], upload_id="up-1", device_count=2,
                                      state=GuardUpload.State.COMPLETE, first_row=1, last_row=2)  # fmt: skip
    w["guard_upload_device"] = GuardUploadDevice.objects.create(upload=part, job=w["guard_upload_job"],
                                                                device_uid="35000000000001", outcome="failed")  # fmt: skip

    # efota
    w["efota_group"] = EfotaGroup.objects.create(account=acme, customer_id=CUSTOMER, group_id="FLEET-A",
                                                 licence=LICENCE, status=EfotaGroup.Status.REGISTERED)  # fmt: skip
    w["efota_pending_group"] = EfotaGroup.objects.create(account=acme, customer_id=CUSTOMER, group_id="FLEET-P",
                                                         licence=LICENCE)  # fmt: skip
    EfotaLicence.objects.create(account=acme, customer_id=CUSTOMER, key=LICENCE, expiration_date=dt.date(2099, 1, 1))
    w["efota_job"] = Job.objects.create(kind="efota.force_update", account=acme, status=Job.Status.SUCCEEDED)
    part = ForceUpdate.objects.create(account=acme, job=w["efota_job"], customer_id=CUSTOMER, licence=LICENCE,
                                      model="SM-G991B", sales_code="BTU", serials=[SERIAL], force_update_id="FU-1",
                                      processing=1)  # fmt: skip
    ForceUpdateDevice.objects.create(force_update=part, serial=SERIAL, status="processing")
    w["efota_register_job"] = Job.objects.create(kind="efota.register", account=acme,
                                                 params={"group": w["efota_pending_group"].pk})  # fmt: skip

    # lookups (portal.lookups) of every page that shows them: answered, refused and still waiting
    ids = {"customer_id": CUSTOMER, "licence": LICENCE}
    w["firmware_lookup"] = Job.objects.create(
        kind="efota.firmware",
        account=acme,
        created_by=admin,
        status=Job.Status.SUCCEEDED,
        params={**ids, "model": "SM-G991B", "sales_code": "BTU", "current": ""},
        result={"versions": ["G991BXXU5"]},
    )
    w["licence_lookup"] = Job.objects.create(
        kind="efota.licence",
        account=acme,
        created_by=admin,
        status=Job.Status.FAILED,
        params=ids,
        result={
            "failure": {"message": "E-FOTA does not know this licence", "code": "FUD_3017", "category": "processing"}
        },
    )
    w["abnormal_lookup"] = Job.objects.create(kind="efota.abnormal", account=acme, params={**ids, "serials": [SERIAL]})
    w["connection_test"] = Job.objects.create(
        kind="portal.connection_test",
        account=acme,
        created_by=admin,
        status=Job.Status.SUCCEEDED,
        result={
            "ok": True,
            "results": [{"service": "guard", "label": "Knox Guard", "ok": True, "message": "ok", "code": ""}],
        },
    )
    w["uploads_lookup"] = Job.objects.create(
        kind="guard.knox_uploads",
        account=acme,
        status=Job.Status.SUCCEEDED,
        result={"account": "Acme", "total": 1, "uploads": [{"uploadId": "u1", "channel": "KDP", "created": ""}]},
    )

    # portal
    for action in ("account.create", "kdp.export", "job.cancel"):
        w["event"] = AuditEvent.objects.record(action, actor=admin, target=acme, summary={"n": 1})
    return {key: getattr(value, "pk", value) for key, value in w.items()}


ROUTES = {name: route for route, name, _ in iter_patterns()}


class FuzzTestCase(HypothesisTestCase):
    """Each `test_fuzz_*` method (made from SPECS below) runs its examples, each in a rolled-back transaction."""

    @classmethod
    def setUpClass(cls) -> None:
        media = tempfile.mkdtemp(prefix="fuzz-media-")
        cls.addClassCleanup(shutil.rmtree, media, ignore_errors=True)
        cls.enterClassContext(
            override_settings(
                MEDIA_ROOT=media,
                KNOX_MAX_RETRIES=0,
                KNOX_MAX_RATE_LIMITED_RETRIES=0,
                KNOX_BACKOFF_MAX=0,
                KNOX_CONNECT_TIMEOUT=0.5,
                KNOX_READ_TIMEOUT=0.5,
                KNOX_GUARD_RATE_LIMIT=0,
                KNOX_KDP_RATE_LIMIT=0,
                KNOX_EFOTA_RATE_LIMIT=0,
            )
        )
        # No request leaves the process: with nothing registered, `responses` refuses every one.
        cls.knox = cls.enterClassContext(responses.RequestsMock(assert_all_requests_are_fired=False))
        super().setUpClass()

    @classmethod
    def setUpTestData(cls) -> None:
        # The admin persona of tests/base.py, made once for the class (examples roll back around it).
        cls.admin = make_user("alice", "admin", is_staff=True)
        cls.world = build_world(cls.admin)
        # One session for every example (logging in again for each would cost more than many of the requests).
        client = Client()
        client.force_login(cls.admin)
        cls.session_key = client.cookies[django_settings.SESSION_COOKIE_NAME].value

    def login(self) -> None:
        self.client.cookies[django_settings.SESSION_COOKIE_NAME] = self.session_key

    def setup_example(self) -> None:
        super().setup_example()
        self.login()

    def good_values(self, spec: Spec) -> dict[str, tuple[str, ...]]:
        """The spec's good values, with "@name" replaced by the pk of that object of the world."""
        return {name: tuple(self.resolve(v) for v in values) for name, values in spec.params.items()}

    def resolve(self, value: str) -> str:
        if value == "@version":
            return str(Job.objects.get(pk=self.world["kdp_job"]).version)
        return str(self.world[value[1:]]) if value.startswith("@") else value

    def draw_inputs(self, data: st.DataObject, spec: Spec) -> dict[str, Any]:
        """Either any subset of the parameters, each good or hostile; or every parameter good but one."""
        good = self.good_values(spec)
        if good and data.draw(st.booleans(), label="one bad among good"):
            bad = data.draw(st.sampled_from(list(good)), label="the bad one")
            inputs = {n: data.draw(st.sampled_from(values), label=n) for n, values in good.items() if n != bad}
            inputs[bad] = data.draw(value_for(bad), label=bad)
        else:
            optional = {n: value_for(n, values) for n, values in good.items()}
            optional["zz_unknown"] = value_for("zz_unknown")
            inputs = data.draw(st.fixed_dictionaries({}, optional=optional), label="params")
        for name, kind in spec.files.items():
            f = data.draw(keys_file_value() if kind == "keys" else file_value(), label=name)
            if f is not None:
                inputs[name] = f
        if data.draw(st.integers(0, 29), label="flood") == 0:
            inputs["flood"] = ["1"] * 1001  # more fields than DATA_UPLOAD_MAX_NUMBER_FIELDS: Django's own 400
        return inputs

    def draw_url(self, data: st.DataObject, spec: Spec) -> str:
        route = ROUTES[spec.name]
        if spec.fmt:
            fmt = data.draw(st.one_of(st.sampled_from(["csv", "xlsx", "csv", "xlsx", "CSV", "pdf", ""]), ANY_TEXT))
            route = route.replace("<str:fmt>", quote(fmt, safe="") or "csv")
        pk = "1"
        if spec.objects:
            good = [str(self.world[o]) for o in spec.objects]
            pk = data.draw(st.sampled_from(good * 4 + list(BAD_PKS)), label="pk")
        return concrete(route, {"pk": pk})

    def fuzz(self, spec: Spec, data: st.DataObject) -> None:
        url = self.draw_url(data, spec)
        inputs = self.draw_inputs(data, spec)
        if spec.method == "get" and data.draw(st.integers(0, 9), label="raw query") == 0:
            url, inputs = f"{url}?{data.draw(st.sampled_from(RAW_QUERIES))}", {}
        headers = {}
        if data.draw(st.booleans(), label="htmx"):
            headers = {"HX-Request": "true", "HX-Target": data.draw(st.sampled_from([*spec.targets, *HX]))}
        self.check(spec, url, inputs, headers)

    def check(self, spec: Spec, url: str, inputs: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        send = self.client.get if spec.method == "get" else self.client.post
        r = send(url, inputs, headers=headers or {})
        if r.streaming:
            b"".join(r.streaming_content)  # an export fails while it streams, not before: read it to the end
        assert r.status_code in ALLOWED, (spec.method, url, inputs, r.status_code)

    def test_no_request_reaches_knox(self):
        """The firewall the fuzzing relies on: a Knox call gets a refused connection, not an answer. No view calls
        Knox (issue 13): Test connection queues a job, run here as a worker would."""
        from portal.lookups import run_lookup

        self.login()
        before = len(self.knox.calls)
        r = self.client.post(f"/accounts/{self.world['acme']}/test/")
        assert r.status_code == 302 and len(self.knox.calls) == before  # the request itself asked Knox nothing
        run_lookup(Job.objects.filter(kind="portal.connection_test").latest("id").pk)
        calls = self.knox.calls[before:]
        assert calls and all(isinstance(call.response, requests.ConnectionError) for call in calls)
        assert all(call.request.url.startswith(NOWHERE) for call in calls)

    def test_edge_values_of_every_parameter(self):
        """Deterministically, on top of the fuzz: each parameter of each view given each of its edge values, the
        other parameters good (so the edge reaches the form and whatever the form lets through)."""
        self.login()
        sent, failures = 0, []
        for spec in SPECS:
            route = ROUTES[spec.name].replace("<str:fmt>", "csv")
            url = concrete(route, {"pk": self.world[spec.objects[0]] if spec.objects else 1})
            good = self.good_values(spec)
            for name in good:
                for edge in edges_for(name, sweep=True):
                    inputs = {n: values[0] for n, values in good.items()}
                    inputs[name] = edge
                    try:
                        with transaction.atomic():
                            self.check(spec, url, inputs)
                            transaction.set_rollback(True)
                    except Exception as e:  # every failure, not just the first, with what caused it
                        failures.append(f"{spec.method.upper()} {spec.name} {name}={edge[:40]!r}: {e!r:.200}")
                    sent += 1
        assert not failures, "\n".join(failures)
        assert sent > 300


# FUZZ_SCALE=10 runs ten times as many examples of each view (a deeper search than the suite's own).
SCALE = float(os.environ.get("FUZZ_SCALE", "1"))
# The suite (and CI) draws the same examples every run, so a red run is reproducible and never a coin toss;
# FUZZ_RANDOM=1 explores new ones (with FUZZ_SCALE, the way to hunt for the next bug).
RANDOM = os.environ.get("FUZZ_RANDOM") == "1"


def _fuzz_test(spec: Spec) -> Any:
    @settings(
        max_examples=max(1, round(spec.examples * SCALE)),
        deadline=None,
        derandomize=not RANDOM,
        database=None,  # no .hypothesis/ directory in the work tree
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
    )
    @given(data=st.data())
    def test(self: FuzzTestCase, data: st.DataObject) -> None:
        self.fuzz(spec, data)

    test.__name__ = test.__qualname__ = f"test_fuzz_{spec.label}"
    return test


for _spec in SPECS:
    assert not hasattr(FuzzTestCase, f"test_fuzz_{_spec.label}"), f"two specs for {_spec.label}"
    setattr(FuzzTestCase, f"test_fuzz_{_spec.label}", _fuzz_test(_spec))


# --- coverage of the specs, cursors and the bugs the fuzzing found --------------------------------------------


class FuzzCoverageTestCase(BaseTestCase):
    def test_every_view_of_ours_is_fuzzed(self):
        """A view added without a fuzz spec fails here (as one added without an access rule fails test_access)."""
        ours = {name for _, name, _ in iter_patterns() if name.split(":")[0] in OUR_NAMESPACES}
        assert ours - {s.name for s in SPECS} == set()
        assert {s.name for s in SPECS} - ours == set()  # and no spec names a view that is gone


class CursorTestCase(BaseTestCase):
    """A bad cursor, page or sort gives 400 or the first page (a sane default), never a 500."""

    BAD = ["-1", "0", "abc", "²", "x:²", str(2**63), "9" * 40, "1\x00", "' OR 1=1 --"]

    def setUp(self) -> None:
        super().setUp()
        self.client.force_login(self.viewer)

    def test_bad_cursors_pages_and_sorts(self):
        cursors = {
            "/jobs/": {"before": {}},
            "/audit/": {"before": {}},
            "/kdp/transactions/": {"before": {}},
            "/guard/devices/": {"after": {}},
            "/kdp/devices/": {"after": {"sort": "identifier"}, "sort": {}},
        }
        for url, names in cursors.items():
            for name, extra in names.items():
                for value in self.BAD:
                    r = self.client.get(url, {name: value, **extra})
                    assert r.status_code in (200, 400), (url, name, value, r.status_code)
        for value in ("", "oldest", "identifier", "newest"):  # and every sort with a cursor it did not make
            r = self.client.get("/kdp/devices/", {"sort": value, "after": f"{IMEI}:²"})
            assert r.status_code == 200, value

    def test_a_cursor_past_the_end_shows_an_empty_page_with_the_total(self):
        r = self.client.get("/jobs/", {"before": "1"})
        assert r.status_code == 200 and r.context["page"] == [] and r.context["list_total"].exact


class FoundByFuzzingTestCase(BaseTestCase):
    """The 500s the fuzzing found, one test each: every one of these raised before it was fixed."""

    def setUp(self) -> None:
        super().setUp()
        from kdp.models import Customer, Device
        from tests.kdp.helpers import ready_account

        self.account = ready_account()
        self.customer = Customer.objects.create(account=self.account, customer_id="C1", name="Cust", status="Verified")
        self.device = Device.objects.create(account=self.account, identifier=IMEI, kind="imei", state="registered",
                                            customer=self.customer, registered_at=timezone.now())  # fmt: skip

    def test_audit_dates_at_the_ends_of_the_calendar_are_refused_in_words(self):
        # date_to=9999-12-31 made bounds() compute the day after it: OverflowError (portal/forms.py).
        self.client.force_login(self.viewer)
        r = self.client.get("/audit/", {"date_to": "9999-12-31"})
        assert r.status_code == 200
        assert r.context["form"].errors["date_to"] == ["Enter a date between 1970-01-01 and 2999-12-31."]
        # East of UTC, midnight of 0001-01-01 is before the first datetime there is.
        with override_settings(TIME_ZONE="Asia/Tokyo"):
            assert self.client.get("/audit/", {"date_from": "0001-01-01"}).status_code == 200
        r = self.client.get("/audit/", {"date_from": "2999-12-31", "date_to": "2999-12-31"})
        assert r.status_code == 200 and r.context["form"].is_valid()

    def test_kdp_device_filter_dates_and_job_out_of_range_are_refused(self):
        # Device.objects.matching() computed the day after date_to, and looked up a job id past SQLite's integers.
        self.client.force_login(self.viewer)
        for params in ({"date_to": "9999-12-31"}, {"date_from": "0001-01-01"}, {"job": str(2**63)}):
            r = self.client.get("/kdp/devices/", params)
            assert r.status_code == 200 and not r.context["form"].is_valid(), params
            assert self.client.get("/kdp/devices/export.csv", params).status_code == 400, params
        r = self.client.get("/kdp/devices/", {"job": str(2**63 - 1), "date_to": "2999-12-31"})
        assert r.status_code == 200 and r.context["form"].is_valid()

    def test_kdp_device_cursors_with_digits_int_refuses_start_at_the_top(self):
        # "²".isdigit() is True but int("²") raises: the cursor check let it through (kdp/views.py _device_page).
        self.client.force_login(self.viewer)
        for params in ({"after": "²"}, {"after": "²", "sort": "oldest"}, {"after": f"{IMEI}:²", "sort": "identifier"},
                       {"after": "9" * 40, "sort": "oldest"}):  # fmt: skip
            r = self.client.get("/kdp/devices/", params)
            assert r.status_code == 200, params
            assert [d.pk for d in r.context["devices"]] == [self.device.pk], params

    def test_deleting_devices_by_ids_no_database_can_hold_is_a_bad_request(self):
        # TypedMultipleChoiceField(coerce=int) let 2**63 through to a pk__in lookup: OverflowError.
        self.client.force_login(self.operator)
        for ids in ([str(2**63)], ["-" + "9" * 40], [str(self.device.pk), "0"]):
            r = self.client.post("/kdp/devices/delete/", {"account": self.account.pk, "scope": "selected", "ids": ids})
            assert r.status_code == 400, ids
        assert not Job.objects.filter(kind="kdp.delete").exists()

    def test_a_failed_confirm_with_a_customer_that_is_no_id_shows_the_form_again(self):
        # After a failed confirm the alias list was rebuilt with int(customer) for any "digits" (kdp/views.py).
        upload = Upload.objects.create(account=self.account, filename="f.csv", file="kdp/f.csv",
                                       status=Upload.Status.READY, rows_total=1, valid=1)  # fmt: skip
        self.client.force_login(self.operator)
        for customer in ("²", str(2**63), "١٢"):
            r = self.client.post(f"/kdp/uploads/{upload.pk}/confirm/", {"customer": customer})
            assert r.status_code == 200, customer
            assert "customer" in r.context["confirm"].errors, customer
        assert not Job.objects.filter(kind="kdp.upload").exists()
