"""Request bodies and answer parsing per KDP generation (knox-api.md §3.2-3.6)."""

from __future__ import annotations

import pytest

from kdp.client import Submission, gen1_body, gen2_body, parse_device, parse_status
from portal.knox.errors import KnoxBadResponse


def sub(**kw) -> Submission:
    base = dict(transaction_id="244303", operation="upload", reseller_id="4600000925", customer_id="123400321",
                device_type="IMEI", devices=["351826100005702"])  # fmt: skip
    return Submission(**{**base, **kw})


def test_gen2_upload_body_matches_seed_001():
    assert gen2_body(sub()) == {
        "transactionId": "244303",
        "resellerId": "4600000925",
        "customerId": "123400321",
        "type": "IMEI",
        "devices": ["351826100005702"],
    }


def test_gen2_upload_carries_the_kme_profile_order_and_vendor():
    body = gen2_body(sub(profile_alias="Kiosk", order_no="PO-7", order_time=1700000000, vendor_id="V1"))
    assert body["targetService"] == "KME"
    assert body["profileAliases"] == [{"service": "KME", "aliasName": "Kiosk"}]
    assert (body["orderNo"], body["orderTime"], body["vendorId"]) == ("PO-7", 1700000000, "V1")


def test_gen2_delete_body_has_no_upload_only_fields():
    body = gen2_body(sub(operation="delete", profile_alias="Kiosk", order_no="PO-7"))
    assert "profileAliases" not in body and "orderNo" not in body and body["type"] == "IMEI"


def test_gen1_body_matches_seed_001():
    assert gen1_body(sub(reseller_id="4680000925", customer_id="123004321", devices=["351800000675702"])) == {
        "transactionId": "244303",
        "resellerId": "4680000925",
        "customerId": "123004321",
        "transactionType": "New",
        "devices": {"type": "IMEI", "list": ["351800000675702"]},
    }
    delete = gen1_body(sub(operation="delete", device_type="SN", devices=["R58N123ABCD"], vendor_id="V9"))
    assert delete["transactionType"] == "Delete" and delete["devices"]["type"] == "SN" and delete["vendorId"] == "V9"


def test_it_parses_the_v2_wrapped_status_of_seed_001():
    doc = {"devices": {"totalCount": 1, "totalPage": 1, "pageNum": 0, "transactions": [
        {"transactionId": "246903", "state": "Complete", "type": "Put", "operationType": "UPLOAD",
         "devices": [{"imei": "351826110675643", "code": 40000004, "message": "DEVICE_INVALID", "data": "The specified device is not valid."}]}]}}  # fmt: skip
    st = parse_status(doc, "246903")
    assert st.is_terminal and not st.lists_all
    assert st.failures["351826110675643"].code == "40000004"


def test_all_succeeded_v2_has_no_inner_devices():
    doc = {
        "devices": {"totalCount": 1, "transactions": [{"transactionId": "248603", "state": "Complete", "type": "Put"}]}
    }
    st = parse_status(doc, "248603")
    assert st.state == "Complete" and st.failures == {}


def test_it_parses_the_v1_status_listing_every_device():
    doc = {"totalCount": 2, "totalPage": 1, "pageNum": 0, "transactions": [{"transactionId": "7500657464", "state": "Complete", "type": "Put",
           "devices": [{"imei": "807212627606673"}, {"imei": "40649504931126", "code": 4092100, "message": "RESELLER_DEVICE_ALREADY_EXISTS"}]}]}  # fmt: skip
    st = parse_status(doc, "7500657464")
    assert st.lists_all and st.listed == {"807212627606673", "40649504931126"}
    assert list(st.failures) == ["40649504931126"] and st.failures["40649504931126"].code == "4092100"


def test_it_parses_the_flat_v2_status_and_serial_numbers():
    doc = {"transactionId": "x1", "state": "Complete", "type": "Delete", "operationType": "DELETE",
           "devices": [{"serialNumber": "R58N123ABCD", "code": 40000044, "message": "RESELLER_CUSTOMER_DEVICE_NOT_FOUND"}]}  # fmt: skip
    st = parse_status(doc, "x1")
    assert st.failures["R58N123ABCD"].code == "40000044"


def test_an_unknown_transaction_is_not_found_and_junk_is_a_bad_response():
    assert parse_status({"devices": {"transactions": []}}, "nope").found is False
    with pytest.raises(KnoxBadResponse):
        parse_status(["not", "an", "object"], "x")
    with pytest.raises(KnoxBadResponse):
        parse_status({"unexpected": True}, "x")


def test_list_devices_takes_mei_as_imei():
    d = parse_device({"id": "6012afe85f18342e67ee9126", "mei": "351826000675702", "serialNumber": "R3OOO00WKLD", "meid": "089077500000423280",
                      "customerId": "4600001586", "model": "SM-G981B/DS", "state": "Verified"})  # fmt: skip
    assert (d.identifier, d.imei, d.serial_number, d.customer_id, d.state) == (
        "351826000675702",
        "351826000675702",
        "R3OOO00WKLD",
        "4600001586",
        "Verified",
    )
