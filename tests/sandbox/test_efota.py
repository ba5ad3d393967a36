"""Knox E-FOTA b2bfota v2 conformance: seed 004 and knox-api.md section 5."""

from __future__ import annotations

import time

import pytest
from defusedxml.ElementTree import fromstring

from tests.sandbox.client import KnoxClient

RESOURCE = "com.samsung.efota.mdm.service.v2.MDMDeviceServiceResourceImpl"


def _fud(r, code: str) -> None:
    assert r.status_code == 400, r.text
    assert r.headers["Content-Type"].startswith("application/xml")
    root = fromstring(r.content)
    assert root.tag == "error"
    assert root.findtext("code") == code
    assert root.find("message") is not None
    assert root.findtext("resource") == RESOURCE


def _register(mdm: str, customer: str, group: str, license_: str) -> str:
    return (
        f"<B2bGroupRegisterVO><mdmId>{mdm}</mdmId><customerId>{customer}</customerId>"
        f"<groupId>{group}</groupId><license>{license_}</license></B2bGroupRegisterVO>"
    )


def _ids(client: KnoxClient) -> tuple[str, str, str]:
    e = client.creds["efota"]
    return e["mdm_id"], e["customer_id"], e["license"]


def _body(root: str, client: KnoxClient, inner: str = "", license_: str | None = None) -> str:
    mdm, customer, lic = _ids(client)
    return f"<{root}><mdmId>{mdm}</mdmId><customerId>{customer}</customerId><license>{license_ or lic}</license>{inner}</{root}>"


def test_seed_004_group_register_example(client: KnoxClient) -> None:
    mdm, customer, lic = _ids(client)
    r = client.efota("groupRegister", _register(mdm, customer, "EMMGID12312323", lic))
    assert r.status_code == 200
    assert r.content == b""
    group = client.state()["efota"]["groups"]["EMMGID12312323"]
    assert (group["license"], group["mdmId"], group["customerId"]) == (lic, mdm, customer)
    # Registering the same group again is harmless.
    assert client.efota("groupRegister", _register(mdm, customer, "EMMGID12312323", lic)).status_code == 200


def test_the_literal_seed_example_is_not_our_licence(client: KnoxClient) -> None:
    xml = (
        "<B2bGroupRegisterVO> <mdmId>d1e2f3g4h5</mdmId> <customerId>EEEE4444-FF55-AA66-BB77-CCCCCC888888</customerId> "
        "<groupId>EMMGID12312323</groupId> <license>EFOTA1-fff555-ggg666-hh77</license> </B2bGroupRegisterVO>"
    )
    _fud(client.efota("groupRegister", xml), "FUD_3017")


def test_lower_case_mdm_and_group_ids_are_upper_case(client: KnoxClient) -> None:
    mdm, customer, lic = _ids(client)
    assert client.efota("groupRegister", _register(mdm.lower(), customer, "lowergroup", lic)).status_code == 200
    assert "LOWERGROUP" in client.state()["efota"]["groups"]


@pytest.mark.parametrize(
    ("field", "code"),
    [("mdmId", "FUD_1001"), ("customerId", "FUD_1002"), ("groupId", "FUD_1003"), ("license", "FUD_1004")],
)
def test_missing_parameters(client: KnoxClient, field: str, code: str) -> None:
    mdm, customer, lic = _ids(client)
    xml = (
        _register(mdm, customer, "G1", lic).replace(f"<{field}>", f"<x{field}>").replace(f"</{field}>", f"</x{field}>")
    )
    _fud(client.efota("groupRegister", xml), code)


def test_fifty_utf8_bytes_is_the_edge(client: KnoxClient) -> None:
    mdm, customer, lic = _ids(client)
    fifty = "가" * 16 + "AB"  # 16 x 3 bytes + 2 = 50 bytes, only 18 characters
    fifty_one = "가" * 17  # 51 bytes
    assert len(fifty.encode()) == 50 and len(fifty_one.encode()) == 51
    assert client.efota("groupRegister", _register(mdm, customer, fifty, lic)).status_code == 200
    _fud(client.efota("groupRegister", _register(mdm, customer, fifty_one, lic)), "FUD_1003")
    # A 50-byte mdmId/customerId passes the parameter rule and is then simply not ours.
    _fud(client.efota("groupRegister", _register(fifty, customer, "G", lic)), "FUD_3017")
    _fud(client.efota("groupRegister", _register(fifty_one, customer, "G", lic)), "FUD_1001")
    _fud(client.efota("groupRegister", _register(mdm, fifty, "G", lic)), "FUD_3017")
    _fud(client.efota("groupRegister", _register(mdm, fifty_one, "G", lic)), "FUD_1002")
    hundred = "é" * 50
    assert len(hundred.encode()) == 100
    _fud(client.efota("groupRegister", _register(mdm, customer, "G", hundred)), "FUD_3017")
    _fud(client.efota("groupRegister", _register(mdm, customer, "G", hundred + "x")), "FUD_1004")


def test_parameter_errors_come_in_documented_order(client: KnoxClient) -> None:
    _fud(client.efota("groupRegister", "<B2bGroupRegisterVO/>"), "FUD_1001")


def test_expired_licence_and_licence_conflicts(client: KnoxClient) -> None:
    mdm, customer, lic = _ids(client)
    _fud(
        client.efota("groupRegister", _register(mdm, customer, "G2", client.creds["efota"]["expired_license"])),
        "FUD_3018",
    )
    second = client.creds["efota"]["second_license"]
    assert client.efota("groupRegister", _register(mdm, customer, "G3", lic)).status_code == 200
    _fud(client.efota("groupRegister", _register(mdm, customer, "G3", second)), "FUD_3019")
    change = _register(mdm, customer, "G3", second).replace("B2bGroupRegisterVO", "B2bGroupLicenseChangeVO")
    assert client.efota("groupLicenseChange", change).status_code == 200
    assert client.state()["efota"]["groups"]["G3"]["license"] == second
    _fud(client.efota("groupLicenseChange", change.replace("G3", "NOGROUP")), "FUD_3020")


def test_entity_expansion_and_dtds_are_refused(client: KnoxClient) -> None:
    mdm, customer, lic = _ids(client)
    bomb = (
        '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]>'
        f"<B2bGroupRegisterVO><mdmId>{mdm}</mdmId><customerId>{customer}</customerId><groupId>&lol2;</groupId>"
        f"<license>{lic}</license></B2bGroupRegisterVO>"
    )
    _fud(client.efota("groupRegister", bomb), "FUD_3022")
    external = (
        '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
        "<B2bGroupRegisterVO><mdmId>&xxe;</mdmId></B2bGroupRegisterVO>"
    )
    _fud(client.efota("groupRegister", external), "FUD_3022")
    assert client.state()["efota"]["groups"].keys() == {"DEMOGROUP1"}


def test_malformed_requests(client: KnoxClient) -> None:
    mdm, customer, lic = _ids(client)
    _fud(client.efota("groupRegister", "<not xml"), "FUD_3022")
    _fud(
        client.efota("groupRegister", _register(mdm, customer, "G", lic).replace("B2bGroupRegisterVO", "Other")),
        "FUD_3022",
    )
    r = client.efota("groupRegister", _register(mdm, customer, "G", lic), headers={"Content-Type": "application/json"})
    _fud(r, "FUD_3022")


def test_auth_errors_are_json(client: KnoxClient) -> None:
    r = client.call(
        "POST", "/b2bfota/v2/groupRegister", data=b"<B2bGroupRegisterVO/>", headers={"Content-Type": "application/xml"}
    )
    assert r.status_code == 401
    assert r.json() == {"error": "invalid_request", "error_description": "Missing access token"}
    r = client.efota("groupRegister", "<B2bGroupRegisterVO/>", token="aaaa1111-bb22-cc33-dd44-eeeeee555555")
    assert r.status_code == 401
    assert r.json()["error"] == "invalid_token"


def test_license_info(client: KnoxClient) -> None:
    r = client.efota("licenseInfo", _body("B2bLicenseInfoVO", client))
    assert r.status_code == 200
    root = fromstring(r.content)
    assert root.tag == "B2bLicenseInfoVO"
    assert root.findtext("license") == client.creds["efota"]["license"]
    assert int(root.findtext("maxDeviceCount")) == 100
    assert len(root.findtext("expirationDate")) == 10
    _fud(
        client.efota(
            "licenseInfo", _body("B2bLicenseInfoVO", client, license_=client.creds["efota"]["expired_license"])
        ),
        "FUD_3018",
    )


def test_firmware_list(client: KnoxClient) -> None:
    inner = "<deviceModelName>SM-G991B</deviceModelName><salesCode>BTU</salesCode>"
    root = fromstring(client.efota("firmwareList", _body("B2bFirmwareInfoListVO", client, inner)).content)
    versions = [el.text for el in root.iter("firmwareVersion")]
    assert versions == client.creds["efota"]["firmware"]["SM-G991B/BTU"]
    newer = inner + f"<currentFirmwareVersion>{versions[0]}</currentFirmwareVersion>"
    root = fromstring(client.efota("firmwareList", _body("B2bFirmwareInfoListVO", client, newer)).content)
    assert [el.text for el in root.iter("firmwareVersion")] == versions[1:]
    # No device is registered on the second licence, so its list is empty.
    empty = _body("B2bFirmwareInfoListVO", client, inner, license_=client.creds["efota"]["second_license"])
    assert list(fromstring(client.efota("firmwareList", empty).content).iter("firmwareVersion")) == []
    _fud(client.efota("firmwareList", _body("B2bFirmwareInfoListVO", client)), "FUD_3022")


def _force(serials: list[str], network: str = "WIFIONLY", target: str = "Latest") -> str:
    devices = "".join(f"<serialNumber>{s}</serialNumber>" for s in serials)
    return (
        "<deviceModelName>SM-G991B</deviceModelName><salesCode>BTU</salesCode>"
        f"<networkType>{network}</networkType><targetFirmwareVersion>{target}</targetFirmwareVersion>"
        f"<deviceList>{devices}</deviceList>"
    )


def test_force_update_summary_and_detail(client: KnoxClient) -> None:
    serials = client.creds["efota"]["device_serials"]
    chosen = [serials[0], serials[1], serials[9], "R5ZZZZZZZZZ"]
    r = client.efota("forceUpdate", _body("B2bForceUpdateVO", client, _force(chosen)))
    assert r.status_code == 200
    force_id = fromstring(r.content).findtext("forceUpdateId")
    assert force_id
    query = _body("B2bForceUpdateSummaryVO", client, f"<forceUpdateId>{force_id}</forceUpdateId>")
    summary = fromstring(client.efota("forceUpdateSummary", query).content)
    assert (summary.findtext("processing"), summary.findtext("failed"), summary.findtext("downloaded")) == (
        "2",
        "2",
        "0",
    )
    detail_query = query.replace("B2bForceUpdateSummaryVO", "B2bForceUpdateDetailVO")
    detail = fromstring(client.efota("forceUpdateDetail", detail_query).content)
    assert {d.findtext("serialNumber"): d.findtext("status") for d in detail.iter("device")} == {
        serials[0]: "PROCESSING",
        serials[1]: "PROCESSING",
        serials[9]: "FAILED",
        "R5ZZZZZZZZZ": "FAILED",
    }
    time.sleep(0.25)
    summary = fromstring(client.efota("forceUpdateSummary", query).content)
    assert (summary.findtext("processing"), summary.findtext("downloaded")) == ("0", "2")
    _fud(client.efota("forceUpdateSummary", query.replace(force_id, "NOPE")), "FUD_3020")


@pytest.mark.parametrize(
    ("inner", "code"),
    [
        (_force(["R5" + "1" * 9] * 101), "FUD_3021"),
        (_force(["SHORT"]), "FUD_3022"),
        (_force(["R5ABC-12345"]), "FUD_3022"),
        (_force(["R5AAAAAAAAA"], network="LTE"), "FUD_3022"),
        (_force(["R5AAAAAAAAA"], target="NOPE"), "FUD_3022"),
        (_force([]), "FUD_3022"),
    ],
)
def test_force_update_validation(client: KnoxClient, inner: str, code: str) -> None:
    _fud(client.efota("forceUpdate", _body("B2bForceUpdateVO", client, inner)), code)


def test_abnormal_device_list(client: KnoxClient) -> None:
    serials = client.creds["efota"]["device_serials"]
    inner = "".join(f"<serialNumber>{s}</serialNumber>" for s in (serials[0], serials[8], "R5NOTMINE00"))
    r = client.efota(
        "abnormalDeviceList", _body("B2bAbnormalDeviceListVO", client, f"<deviceList>{inner}</deviceList>")
    )
    root = fromstring(r.content)
    found = {
        item.findtext("abnormalCategoryTitle"): [s.text for s in item.iter("serialNumber")]
        for item in root.iter("abnormalCategoryItem")
    }
    assert found == {"Blocked, Insufficient License": [serials[8]], "Not Enrolled": ["R5NOTMINE00"]}
