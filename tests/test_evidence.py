"""Every assumed Knox value names its evidence, and the sandbox is lenient wherever the evidence is.

This replaces a test that made the client and the sandbox hold equal values: that only proved they agree with each
other. Here nothing compares the two sides' values. Instead (portal/knox/evidence.py, knox-api.md section 6):
- each registered constant exists in the client module that owns it, with a named source of a known kind;
- the sandbox refuses other forms only where a seed is explicit;
- every alternative form that some evidence shows is accepted by a real sandbox (or read by the client).
"""

from __future__ import annotations

import importlib
import random
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import sandbox.constants as sandbox_constants
from kdp.client import parse_device
from portal.knox.auth import JWT_ALGORITHM, KNOX_ACCESS_TOKEN_VALIDITY_MINUTES
from portal.knox.evidence import AUTH, EFOTA, EVIDENCE, GUARD, KDP, KINDS, SANDBOX_TREATMENTS, SEED
from sandbox.server import SandboxServer
from tests.sandbox.client import KG, RP, KnoxClient, new_imei, new_serial

NAMES = sorted(EVIDENCE)
SEED_NAME = re.compile(r"\bseeds? 00[0-4]\b")
CHECKED: set[str] = set()


def checks(name: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Mark a test as the proof that the alternatives of EVIDENCE[name] are accepted."""

    def mark(test: Callable[..., None]) -> Callable[..., None]:
        CHECKED.add(name)
        return test

    return mark


# --- the registry ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_each_constant_lives_in_the_client_module_that_owns_it(name: str) -> None:
    module = importlib.import_module(EVIDENCE[name].module)
    assert hasattr(module, name), f"{name} is registered under {module.__name__}, which does not define it"


@pytest.mark.parametrize("name", NAMES)
def test_each_constant_names_its_evidence(name: str) -> None:
    row = EVIDENCE[name]
    assert row.kind in KINDS, f"{name}: unknown evidence kind {row.kind!r}"
    assert row.sandbox in SANDBOX_TREATMENTS, f"{name}: unknown sandbox treatment {row.sandbox!r}"
    assert row.source.strip() and "\n" not in row.source, f"{name}: the source must be one non-empty line"
    assert row.ref.startswith("§"), f"{name}: ref must point into knox-api.md, got {row.ref!r}"
    if row.kind == SEED:
        assert SEED_NAME.search(row.source) and '"' in row.source, f"{name}: a seed row names and quotes its seed"


def test_the_sandbox_is_strict_only_where_a_seed_is_explicit() -> None:
    strict_without_seed = sorted(n for n, row in EVIDENCE.items() if row.sandbox == "strict" and row.kind != SEED)
    assert not strict_without_seed, f"strict on a non-seed value, be lenient instead: {strict_without_seed}"


def test_a_value_both_sides_declare_names_its_evidence() -> None:
    """A constant the sandbox declares under a client constant's name is an assumption both sides make."""
    missing = [
        f"{module}.{name}"
        for module in (AUTH, KDP, GUARD, EFOTA)
        for name in dir(importlib.import_module(module))
        if name.isupper() and hasattr(sandbox_constants, name) and name not in EVIDENCE
    ]
    assert not missing, f"add these to portal/knox/evidence.py and knox-api.md section 6: {missing}"


def test_every_alternative_form_is_checked_against_the_sandbox() -> None:
    with_alternatives = {name for name, row in EVIDENCE.items() if row.alternatives}
    assert with_alternatives - CHECKED == set(), "write a check (@checks) for each alternative form"
    assert CHECKED - with_alternatives == set(), "a check exists for a row that lists no alternatives"


# --- the alternatives, against a real sandbox ------------------------------------------------------------------


@pytest.fixture(scope="module")
def knox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KnoxClient]:
    server = SandboxServer(Path(tmp_path_factory.mktemp("evidence")), process_delay=0.2, rate_limit=0, kdp_rate_limit=0)
    server.start()
    yield KnoxClient(server.url, server.credentials_path)
    server.stop()


def _works_on_knox_guard(knox: KnoxClient, access_token_answer) -> None:
    assert access_token_answer.status_code == 200, access_token_answer.text
    token = access_token_answer.json()["accessToken"]
    apitoken = knox.sign({"accessToken": token, "publicKey": knox.public_key})
    r = knox.call("GET", KG + "/authorization", headers={"x-knox-apitoken": apitoken})
    assert r.status_code == 200, r.text


@checks("KNOX_ACCESS_TOKEN_VALIDITY_MINUTES")
@pytest.mark.parametrize("validity", [KNOX_ACCESS_TOKEN_VALIDITY_MINUTES, str(KNOX_ACCESS_TOKEN_VALIDITY_MINUTES)])
def test_the_validity_may_be_a_number_or_a_string(knox: KnoxClient, validity: object) -> None:
    _works_on_knox_guard(knox, knox.request_access_token(validityForAccessTokenInMinutes=validity))


@checks("KNOX_ACCESS_TOKEN_VALIDITY_MINUTES")
def test_the_validity_may_be_left_out(knox: KnoxClient) -> None:
    for path in ("/ams/v1/users/accesstoken", "/ams/v0/users/accesstoken"):
        body = {"base64EncodedStringPublicKey": knox.public_key, "clientIdentifierJwt": knox.client_identifier_jwt()}
        _works_on_knox_guard(knox, knox.call("POST", path, json=body))


@checks("JWT_ALGORITHM")
@pytest.mark.parametrize("algorithm", sorted({JWT_ALGORITHM, "RS256", "RS384"}))
def test_every_signing_algorithm_samsung_uses_is_accepted(knox: KnoxClient, algorithm: str) -> None:
    claims = {"clientIdentifier": knox.creds["client_identifier"], "publicKey": knox.public_key}
    _works_on_knox_guard(knox, knox.request_access_token(knox.sign(claims, algorithm=algorithm)))


@checks("JWT_ALGORITHM")
def test_the_npm_librarys_jti_form_is_accepted(knox: KnoxClient) -> None:
    jti = str(uuid.uuid1()) + str(uuid.uuid1())  # knox-token-library-js: uuidv1() + uuidv1(), 72 characters
    _works_on_knox_guard(knox, knox.request_access_token(knox.client_identifier_jwt(jti=jti)))


def _upload(knox: KnoxClient, transaction_id: str) -> None:
    r = knox.kdp("PUT", "/devices/upload", json=knox.upload_body([new_imei()], tx=transaction_id))
    assert r.status_code == 200, r.text


@checks("KDP_STATUS_QUERY_PARAMS")
@pytest.mark.parametrize("with_reseller", [False, True], ids=["transactionId", "transactionId+resellerId"])
def test_the_status_is_found_with_or_without_the_reseller(knox: KnoxClient, with_reseller: bool) -> None:
    tx = uuid.uuid4().hex
    _upload(knox, tx)
    params = {"transactionId": tx} | ({"resellerId": knox.creds["reseller_id"]} if with_reseller else {})
    r = knox.call("GET", RP + "/devices/status", headers={"x-knox-apitoken": knox.api_token()}, params=params)
    assert r.status_code == 200, r.text
    assert [t["transactionId"] for t in r.json()["devices"]["transactions"]] == [tx]


@checks("KDP_TRANSACTION_ID_MAX_LENGTH")
@pytest.mark.parametrize("form", ["numeric", "uuid4-hex"])
def test_seed_and_client_transaction_ids_are_both_accepted(knox: KnoxClient, form: str) -> None:
    tx = str(random.randrange(10**5, 10**9)) if form == "numeric" else uuid.uuid4().hex
    _upload(knox, tx)
    assert knox.wait_complete(tx)["state"] == "Complete"


@checks("KDP_PAGE_SIZE")
def test_kdp_lists_take_the_page_size_of_seed_001s_example(knox: KnoxClient) -> None:
    assert knox.kdp("GET", "/devices", params={"pageSize": 1_000_000}).status_code == 200


@checks("KG_CONTACT_REQUIRED")
def test_send_message_without_a_contact_is_accepted(knox: KnoxClient) -> None:
    enrolled = next(d for d in knox.state()["guard"]["devices"].values() if d["state"] == "Enrolled")
    r = knox.kg("POST", "/devices/sendMessage", json={"deviceUid": enrolled["deviceUid"], "message": "Hello"})
    assert r.status_code == 200, r.text


@checks("KDP_LIST_IMEI_KEYS")
@pytest.mark.parametrize("key", ["mei", "imei"])
def test_the_client_reads_the_imei_under_either_key(key: str) -> None:
    imei = new_imei()
    assert parse_device({key: imei, "state": "Verified"}).imei == imei


@checks("KG_TRANSACTION_ID_MAX_LENGTH")
@pytest.mark.parametrize("header", [None, uuid.uuid4().hex], ids=["without", "with"])
def test_a_knox_guard_call_takes_the_transaction_id_or_none(knox: KnoxClient, header: str | None) -> None:
    assert knox.kg("GET", "/authorization", tx=header).status_code == 200


@checks("EFOTA_SERIAL_LENGTH")
@pytest.mark.parametrize("serial", ["R3OOO00WKLD", "12345678901", "new"])
def test_e_fota_takes_serials_with_or_without_letters(knox: KnoxClient, serial: str) -> None:
    serial = new_serial() if serial == "new" else serial  # drawn at run time: collection is the same everywhere
    e = knox.creds["efota"]
    xml = (
        f"<B2bAbnormalDeviceListVO><mdmId>{e['mdm_id']}</mdmId><customerId>{e['customer_id']}</customerId>"
        f"<license>{e['license']}</license><deviceList><serialNumber>{serial}</serialNumber></deviceList>"
        "</B2bAbnormalDeviceListVO>"
    )
    r = knox.efota("abnormalDeviceList", xml)
    assert r.status_code == 200, r.text
    assert serial.encode() in r.content
