"""The E-FOTA client: XML it sends, field rules in UTF-8 bytes, FUD errors in words, hostile answers, tokens and
service-error retries. HTTP is mocked with `responses` (the network edge only) except where the real sandbox
is the better witness (token expiry, injected faults)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
import requests
import responses
from defusedxml.ElementTree import fromstring

from efota.client import (
    SERVICE_RETRIES,
    EfotaClient,
    EfotaValidationError,
    Ids,
    build,
    check_device_fields,
    check_ids,
    clean_serials,
    explain,
    fud_category,
)
from efota.constants import FUD_SENTENCES
from portal.knox.errors import KnoxBadResponse, KnoxError
from portal.knox.http import KnoxSession
from portal.models import KnoxAccount

BASE = "http://efota.test"
RESOURCE = "com.samsung.efota.mdm.service.v2.MDMDeviceServiceResourceImpl"
CUSTOMER = "EEEE4444-FF55-AA66-BB77-CCCCCC888888"
LICENCE = "EFOTA1-fff555-ggg666-hh77"
SERIALS = ["R5CMXWARTYK", "R58N123ABCD"]


@pytest.fixture(autouse=True)
def _unpaced(settings):
    settings.KNOX_EFOTA_RATE_LIMIT = 0


@pytest.fixture
def account(db):
    account = KnoxAccount(
        name="Mocked", environment="sandbox", efota_url=BASE, efota_client_id="efota-c1", efota_mdm_id="d1e2f3g4h5"
    )
    account.set_secret("efota_client_secret", "not-a-real-secret")
    account.save()
    return account


def client_for(account: KnoxAccount, sleeps: list[float] | None = None) -> EfotaClient:
    sleeps = sleeps if sleeps is not None else []
    return EfotaClient(account, KnoxSession(account, sleep=sleeps.append), sleep=sleeps.append)


def fud(code: str) -> str:
    return f"<error><code>{code}</code><message/><resource>{RESOURCE}</resource></error>"


@pytest.fixture
def mocked():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.post(f"{BASE}/iam/auth/oauth/v2/token", json={"access_token": "aaaa1111-bb22-cc33-dd44-eeeeee555555",
                  "token_type": "bearer", "expires_in": 3600})  # fmt: skip
        yield rsps


def sent(rsps, operation: str) -> list[ET.Element]:
    """The XML bodies the client sent to one operation, parsed."""
    return [fromstring(c.request.body) for c in rsps.calls if c.request.url.endswith(f"/b2bfota/v2/{operation}")]


def children(root: ET.Element) -> list[tuple[str, str]]:
    return [(child.tag, (child.text or "")) for child in root]


# --- XML shapes ---------------------------------------------------------------------------------------------


def test_build_writes_the_seed_example_exactly():
    body = build(
        "B2bGroupRegisterVO",
        {"mdmId": "d1e2f3g4h5", "customerId": CUSTOMER, "groupId": "EMMGID12312323", "license": LICENCE},
    )
    assert body == (
        b"<B2bGroupRegisterVO><mdmId>d1e2f3g4h5</mdmId><customerId>EEEE4444-FF55-AA66-BB77-CCCCCC888888</customerId>"
        b"<groupId>EMMGID12312323</groupId><license>EFOTA1-fff555-ggg666-hh77</license></B2bGroupRegisterVO>"
    )


def test_build_escapes_user_input_and_nests_device_lists():
    body = build("B2bAbnormalDeviceListVO", {"mdmId": "<A&B>", "skipped": None, "deviceList": SERIALS})
    assert body == (
        b"<B2bAbnormalDeviceListVO><mdmId>&lt;A&amp;B&gt;</mdmId><deviceList><serialNumber>R5CMXWARTYK</serialNumber>"
        b"<serialNumber>R58N123ABCD</serialNumber></deviceList></B2bAbnormalDeviceListVO>"
    )
    assert (
        build("B2bLicenseInfoVO", {"license": "é"})
        == "<B2bLicenseInfoVO><license>é</license></B2bLicenseInfoVO>".encode()
    )


def test_every_operation_sends_its_root_element_with_children_in_the_documented_order(account, mocked):
    for op in ("groupRegister", "groupLicenseChange", "firmwareList", "forceUpdateSummary", "forceUpdateDetail"):
        mocked.post(f"{BASE}/b2bfota/v2/{op}", body="")
    mocked.post(f"{BASE}/b2bfota/v2/licenseInfo", body="<B2bLicenseInfoVO><maxDeviceCount>100</maxDeviceCount>"
                "<expirationDate>2030-01-31</expirationDate></B2bLicenseInfoVO>")  # fmt: skip
    mocked.post(
        f"{BASE}/b2bfota/v2/forceUpdate",
        body="<B2bForceUpdateVO><forceUpdateId>FU-1</forceUpdateId></B2bForceUpdateVO>",
    )
    mocked.post(f"{BASE}/b2bfota/v2/abnormalDeviceList", body="<B2bAbnormalDeviceListVO/>")
    client = client_for(account)
    ids = [("mdmId", "D1E2F3G4H5"), ("customerId", CUSTOMER)]
    lic = [("license", LICENCE)]

    client.group_register(CUSTOMER, "emmgid12312323", LICENCE)
    client.group_license_change(CUSTOMER, "EMMGID12312323", "EFOTA1-other")
    info = client.license_info(CUSTOMER, LICENCE)
    client.firmware_list(CUSTOMER, LICENCE, "sm-g991b", "btu", "G991BXXU5DVJ1")
    force_id = client.force_update(CUSTOMER, LICENCE, "SM-G991B", "BTU", [s.lower() for s in SERIALS])
    client.force_update_summary(CUSTOMER, LICENCE, "FU-1")
    client.force_update_detail(CUSTOMER, LICENCE, "FU-1")
    client.abnormal_devices(CUSTOMER, LICENCE, SERIALS)

    assert (info.max_devices, info.expiration_date, force_id) == (100, "2030-01-31", "FU-1")
    (register,) = sent(mocked, "groupRegister")
    assert register.tag == "B2bGroupRegisterVO"
    assert children(register) == [*ids, ("groupId", "EMMGID12312323"), *lic]  # the seed 004 example's order
    (change,) = sent(mocked, "groupLicenseChange")
    assert change.tag == "B2bGroupLicenseChangeVO"
    assert children(change) == [*ids, ("groupId", "EMMGID12312323"), ("license", "EFOTA1-other")]
    (licence,) = sent(mocked, "licenseInfo")
    assert (licence.tag, children(licence)) == ("B2bLicenseInfoVO", [*ids, *lic])
    (fw,) = sent(mocked, "firmwareList")
    assert fw.tag == "B2bFirmwareInfoListVO"
    assert children(fw) == [*ids, *lic, ("deviceModelName", "SM-G991B"), ("salesCode", "BTU"),
                            ("currentFirmwareVersion", "G991BXXU5DVJ1")]  # fmt: skip
    (force,) = sent(mocked, "forceUpdate")
    assert force.tag == "B2bForceUpdateVO"
    assert [c.tag for c in force] == ["mdmId", "customerId", "license", "deviceModelName", "salesCode", "networkType",
                                      "targetFirmwareVersion", "deviceList"]  # fmt: skip
    assert (force.findtext("networkType"), force.findtext("targetFirmwareVersion")) == ("WIFIONLY", "Latest")
    assert [s.text for s in force.find("deviceList")] == SERIALS  # upper-cased
    assert [s.tag for s in force.find("deviceList")] == ["serialNumber", "serialNumber"]
    for op, root in (
        ("forceUpdateSummary", "B2bForceUpdateSummaryVO"),
        ("forceUpdateDetail", "B2bForceUpdateDetailVO"),
    ):
        (body,) = sent(mocked, op)
        assert (body.tag, children(body)) == (root, [*ids, *lic, ("forceUpdateId", "FU-1")])
    (abnormal,) = sent(mocked, "abnormalDeviceList")
    assert abnormal.tag == "B2bAbnormalDeviceListVO" and [c.tag for c in abnormal][-1] == "deviceList"
    headers = mocked.calls[1].request.headers
    assert headers["Content-Type"] == "application/xml"
    assert headers["Authorization"] == "Bearer aaaa1111-bb22-cc33-dd44-eeeeee555555"


def test_mdm_id_and_group_id_are_upper_cased_but_the_customer_id_is_not(account, mocked):
    account.efota_mdm_id = "7z4rtg7tfk"
    mocked.post(f"{BASE}/b2bfota/v2/groupRegister", body="")
    client_for(account).group_register(" eeee4444-ff55 ", " fleet-ä ", LICENCE)
    (body,) = sent(mocked, "groupRegister")
    assert (body.findtext("mdmId"), body.findtext("groupId")) == ("7Z4RTG7TFK", "FLEET-Ä")
    assert body.findtext("customerId") == "eeee4444-ff55"


# --- byte limits --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("field", "limit"), [("mdm_id", 50), ("customer_id", 50), ("group_id", 50), ("license", 100)])
def test_limits_count_utf8_bytes_not_characters(field, limit):
    def check(value: str) -> None:
        values = {"mdm_id": "D1E2F3G4H5", "customer_id": CUSTOMER, "license": LICENCE, "group_id": "G1", field: value}
        group = values.pop("group_id")
        check_ids(Ids(**values), group_id=group)

    fits = "é" * (limit // 2)  # 2 bytes each: exactly at the limit
    check(fits)
    too_long = fits + "a"  # one byte over, with far fewer characters than the limit
    assert len(too_long) < limit
    with pytest.raises(EfotaValidationError) as e:
        check(too_long)
    assert list(e.value.errors) == [field]
    assert (
        f"is {limit + 1} bytes in UTF-8" in e.value.errors[field] and f"allows {limit} bytes" in e.value.errors[field]
    )


def test_missing_values_are_named_and_nothing_is_sent(account, mocked):
    with pytest.raises(EfotaValidationError) as e:
        client_for(account).group_register(" ", "é" * 26, "")
    assert set(e.value.errors) == {"customer_id", "group_id", "license"}
    assert e.value.errors["license"] == "The licence is required."
    assert len(mocked.calls) == 0


def test_device_field_limits_are_checked_before_any_call(account, mocked):
    """The portal's limits on model, sales code and version (efota.constants), one check for the client, the
    forms and queue_force_update: every problem is named and nothing is sent."""
    check_device_fields(model="M" * 40, sales_code="S" * 10, target="", current="V" * 60)
    with pytest.raises(EfotaValidationError) as e:
        check_device_fields(model=" ", sales_code="S" * 11, target="V" * 61)
    assert e.value.errors == {
        "model": "The device model name is required (e.g. SM-G991B).",
        "sales_code": "The sales code is longer than 10 characters.",
        "target": "The target firmware version is longer than 60 characters.",
    }
    with pytest.raises(EfotaValidationError) as e:
        client_for(account).firmware_list(CUSTOMER, LICENCE, "M" * 41, "BTU")
    assert list(e.value.errors) == ["model"]
    assert len(mocked.calls) == 0


def test_serial_numbers_are_cleaned_checked_and_deduplicated():
    assert clean_serials([" r5cmxwartyk", "R5CM XWAR TYK", "", "R58N123ABCD"]) == SERIALS
    with pytest.raises(EfotaValidationError) as e:
        clean_serials(["R5CMXWARTYK", "TOO-SHORT", "R5CMXWARTYKX"])
    assert "TOO-SHORT, R5CMXWARTYKX" in e.value.errors["serials"]
    with pytest.raises(EfotaValidationError):
        clean_serials(["  "])


def test_abnormal_devices_are_asked_100_at_a_time_and_merged(account, mocked):
    serials = [f"R5{n:09d}" for n in range(250)]

    def answer(request):
        asked = [s.text for s in fromstring(request.body).iter("serialNumber")]
        items = "".join(
            f"<abnormalCategoryItem><abnormalCategoryTitle>{title}</abnormalCategoryTitle><abnormalDeviceList>"
            f"<serialNumber>{s}</serialNumber></abnormalDeviceList></abnormalCategoryItem>"
            for title, s in (("Not Enrolled", asked[0]), ("Blocked, Insufficient License", asked[-1]))
        )
        return (
            200,
            {},
            f"<B2bAbnormalDeviceListVO><abnormalCategoryList>{items}</abnormalCategoryList></B2bAbnormalDeviceListVO>",
        )

    mocked.add_callback(responses.POST, f"{BASE}/b2bfota/v2/abnormalDeviceList", callback=answer)
    found = client_for(account).abnormal_devices(CUSTOMER, LICENCE, serials)
    assert [len(list(b.iter("serialNumber"))) for b in sent(mocked, "abnormalDeviceList")] == [100, 100, 50]
    assert found["Not Enrolled"] == [serials[0], serials[100], serials[200]]
    assert found["Blocked, Insufficient License"] == [serials[99], serials[199], serials[249]]


def test_a_force_update_of_more_than_100_devices_is_refused_before_sending(account, mocked):
    with pytest.raises(EfotaValidationError) as e:
        client_for(account).force_update(CUSTOMER, LICENCE, "SM-G991B", "BTU", [f"R5{n:09d}" for n in range(101)])
    assert "At most 100 devices" in e.value.errors["serials"] and len(mocked.calls) == 0


# --- errors -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("code", sorted(FUD_SENTENCES))
def test_each_fud_code_is_explained_in_words(account, mocked, code):
    mocked.post(f"{BASE}/b2bfota/v2/licenseInfo", body=fud(code), status=400, content_type="application/xml")
    sleeps: list[float] = []
    with pytest.raises(KnoxError) as e:
        client_for(account, sleeps).license_info(CUSTOMER, LICENCE)
    assert e.value.code == code and e.value.detail == RESOURCE
    assert explain(e.value) == FUD_SENTENCES[code]
    expected = {"1": "parameter", "3": "processing", "9": "service"}[code[4]]
    assert fud_category(code) == expected
    # Service errors are retried (a bounded number of times); parameter and processing errors are final.
    assert len(sent(mocked, "licenseInfo")) == (1 + SERVICE_RETRIES if expected == "service" else 1)
    assert len(sleeps) == (SERVICE_RETRIES if expected == "service" else 0)


def test_an_unknown_fud_code_is_shown_verbatim_with_its_resource(account, mocked):
    mocked.post(f"{BASE}/b2bfota/v2/groupRegister", body=fud("FUD_3999"), status=400)
    with pytest.raises(KnoxError) as e:
        client_for(account).group_register(CUSTOMER, "G1", LICENCE)
    assert explain(e.value) == f"E-FOTA answered FUD_3999 from {RESOURCE}."
    assert fud_category("FUD_3999") == "processing" and fud_category("4000000") == "other"


def test_a_force_update_is_never_retried_after_a_service_error(account, mocked):
    mocked.post(f"{BASE}/b2bfota/v2/forceUpdate", body=fud("FUD_9001"), status=500)
    with pytest.raises(KnoxError) as e:
        client_for(account).force_update(CUSTOMER, LICENCE, "SM-G991B", "BTU", SERIALS)
    assert e.value.code == "FUD_9001" and len(sent(mocked, "forceUpdate")) == 1


BILLION_LAUGHS = (
    '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    '<!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">'
    '<!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">'
    '<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>'
    "<B2bLicenseInfoVO><license>&lol3;</license><maxDeviceCount>100</maxDeviceCount></B2bLicenseInfoVO>"
)
EXTERNAL_ENTITY = (
    '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY secret SYSTEM "file:///etc/passwd">]>'
    "<B2bLicenseInfoVO><license>&secret;</license><maxDeviceCount>100</maxDeviceCount></B2bLicenseInfoVO>"
)


@pytest.mark.parametrize("answer", [BILLION_LAUGHS, EXTERNAL_ENTITY, "<B2bLicenseInfoVO><license>cut off"])
def test_hostile_or_broken_xml_answers_are_refused(account, mocked, answer):
    mocked.post(f"{BASE}/b2bfota/v2/licenseInfo", body=answer)
    with pytest.raises(KnoxBadResponse) as e:
        client_for(account).license_info(CUSTOMER, LICENCE)
    assert "cannot be read safely" in str(e.value)
    assert "root:" not in str(e.value) and "lollol" not in str(e.value)


def test_an_empty_licence_answer_is_refused(account, mocked):
    mocked.post(f"{BASE}/b2bfota/v2/licenseInfo", body="")
    with pytest.raises(KnoxBadResponse):
        client_for(account).license_info(CUSTOMER, LICENCE)


# --- against the sandbox ------------------------------------------------------------------------------------


def efota_calls(knox_sandbox, path: str) -> int:
    state = requests.get(f"{knox_sandbox.url}/_sandbox/state?devices=0", timeout=10).json()
    return state["counters"]["by_path"].get(path, 0)


def test_the_token_is_cached_and_renewed_after_it_expires(sandbox_account, knox_sandbox):
    efota = knox_sandbox.credentials["efota"]
    client = EfotaClient(sandbox_account)
    assert client.license_info(efota["customer_id"], efota["license"]).max_devices
    client.license_info(efota["customer_id"], efota["license"])
    assert efota_calls(knox_sandbox, "/iam/auth/oauth/v2/token") == 1  # cached between calls

    requests.post(f"{knox_sandbox.url}/_sandbox/expire-tokens", timeout=10).raise_for_status()
    info = EfotaClient(sandbox_account).license_info(efota["customer_id"], efota["license"])
    assert info.license == efota["license"] and info.max_devices
    assert efota_calls(knox_sandbox, "/iam/auth/oauth/v2/token") == 2  # refused once, renewed, retried
    assert efota_calls(knox_sandbox, "/b2bfota/v2/licenseInfo") == 4


def test_service_errors_are_retried_a_bounded_number_of_times_then_explained(sandbox_account, knox_sandbox, settings):
    settings.KNOX_MAX_RETRIES = 1
    efota = knox_sandbox.credentials["efota"]
    faults = f"{knox_sandbox.url}/_sandbox/faults"
    assert EfotaClient(sandbox_account).license_info(efota["customer_id"], efota["license"]).max_devices  # token
    requests.post(faults, json={"error": 1.0}, timeout=10).raise_for_status()
    sleeps: list[float] = []
    try:
        with pytest.raises(KnoxError) as e:
            client_for(sandbox_account, sleeps).license_info(efota["customer_id"], efota["license"])
        injected = requests.get(f"{knox_sandbox.url}/_sandbox/state?devices=0", timeout=10).json()["counters"]
    finally:
        requests.post(faults, json={}, timeout=10).raise_for_status()
    assert e.value.code in ("FUD_9001", "FUD_9003") and fud_category(e.value.code) == "service"
    assert "retried and gave up" in explain(e.value)
    # The client retries SERVICE_RETRIES times; the HTTP layer may retry a 503 once more inside each attempt.
    attempts = injected["faults"]["error"]
    assert 1 + SERVICE_RETRIES <= attempts <= (1 + SERVICE_RETRIES) * (1 + settings.KNOX_MAX_RETRIES)
    assert injected["by_path"]["/b2bfota/v2/licenseInfo"] == 1 + attempts
    assert len(sleeps) >= SERVICE_RETRIES
    # Faults cleared: the next call goes through.
    assert EfotaClient(sandbox_account).license_info(efota["customer_id"], efota["license"]).max_devices
