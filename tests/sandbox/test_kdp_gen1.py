"""KDP Gen1 (/bulkenroll) conformance: V1 payloads and shapes (seed 000, seed 001, knox-api.md section 3)."""

from __future__ import annotations

import time
import uuid
from typing import Any

from tests.sandbox.client import KnoxClient, bad_imei, new_imei

V1 = "/bulkenroll/v1/reseller"


def _v1_body(client: KnoxClient, devices: list[str], *, kind: str = "New", **extra: Any) -> dict[str, Any]:
    return {
        "transactionId": uuid.uuid4().hex[:12],
        "resellerId": client.creds["gen1_reseller_id"],
        "customerId": client.creds["gen1_customers"][0]["customerId"],
        "transactionType": kind,
        "devices": {"type": "IMEI", "list": devices},
        **extra,
    }


def _wait_v1(client: KnoxClient, transaction_id: str, path: str = V1) -> dict[str, Any]:
    deadline = time.monotonic() + 5
    while True:
        r = client.gen1(
            "GET",
            path + "/devices/status",
            params={"resellerId": client.creds["gen1_reseller_id"], "transactionId": transaction_id},
        )
        assert r.status_code == 200, r.text
        body = r.json()
        if body["transactions"][0]["state"] in ("Complete", "Rejected"):
            return body
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_seed_001_v1_upload_and_status_shapes(client: KnoxClient) -> None:
    good = new_imei()
    wrong = bad_imei()
    existing = client.creds["second_reseller"]["device_ids"][0]
    body = _v1_body(client, [good, wrong, existing])
    r = client.gen1("PUT", V1 + "/devices", json=body)
    assert r.status_code == 200
    assert r.json() == {
        "transactionId": body["transactionId"],
        "state": "Progress",
        "code": 2000000,
        "message": "SUCCESS",
    }
    status = _wait_v1(client, body["transactionId"])
    # V1: no wrapper, totalPage (not totalPages), every device listed, failed ones with code/message/data.
    assert set(status) == {"totalCount", "totalPage", "pageNum", "transactions"}
    assert status["totalCount"] == 1
    assert status["totalPage"] == 1
    tx = status["transactions"][0]
    assert tx["state"] == "Complete"
    assert tx["type"] == "Put"
    assert "operationType" not in tx
    by_imei = {d["imei"]: d for d in tx["devices"]}
    assert by_imei[good] == {"imei": good}
    assert by_imei[wrong]["code"] == 40000004
    assert by_imei[existing]["code"] == 4092100
    assert by_imei[existing]["message"] == "RESELLER_DEVICE_ALREADY_EXISTS"
    assert by_imei[existing]["data"] == f"device imei[{existing}] already exists"
    assert client.state()["kdp"]["devices"][good]["resellerId"] == client.creds["gen1_reseller_id"]


def test_the_v2_bulkenroll_paths_work_too(client: KnoxClient) -> None:
    body = _v1_body(client, [new_imei()])
    assert client.gen1("PUT", "/bulkenroll/v2/reseller/devices", json=body).status_code == 200
    status = _wait_v1(client, body["transactionId"], "/bulkenroll/v2/reseller")
    assert status["transactions"][0]["state"] == "Complete"


def test_an_unknown_customer_is_a_rejected_transaction(client: KnoxClient) -> None:
    body = _v1_body(client, [new_imei()], customerId="704304108")
    r = client.gen1("PUT", V1 + "/devices", json=body)
    assert r.status_code == 404
    assert r.json() == {
        "transactionId": body["transactionId"],
        "state": "Rejected",
        "code": 4042104,
        "message": "CUSTOMER_NOT_FOUND",
        "data": "customer not found. (customer id : [704304108])",
    }
    tx = _wait_v1(client, body["transactionId"])["transactions"][0]
    assert tx["state"] == "Rejected"
    assert tx["code"] == 4042104


def test_a_missing_reseller_id_is_4002101(client: KnoxClient) -> None:
    body = _v1_body(client, [new_imei()])
    del body["resellerId"]
    r = client.gen1("PUT", V1 + "/devices", json=body)
    assert r.status_code == 400
    assert r.json()["code"] == 4002101
    assert r.json()["message"] == "RESELLER_ID_MISSING"


def test_transaction_type_must_match_the_endpoint(client: KnoxClient) -> None:
    r = client.gen1("PUT", V1 + "/devices", json=_v1_body(client, [new_imei()], kind="Delete"))
    assert r.status_code == 400
    r = client.gen1("PUT", V1 + "/devices/delete", json=_v1_body(client, [new_imei()], kind="New"))
    assert r.status_code == 400


def test_delete_by_list_and_by_remove_transaction_id(client: KnoxClient) -> None:
    own = client.creds["gen1_customers"][0]["devices"]
    body = _v1_body(client, [own[0], client.creds["customers"][0]["devices"][0]], kind="Delete")
    assert client.gen1("PUT", V1 + "/devices/delete", json=body).status_code == 200
    tx = _wait_v1(client, body["transactionId"])["transactions"][0]
    assert tx["type"] == "Delete"
    codes = {d["imei"]: d.get("code") for d in tx["devices"]}
    assert codes == {own[0]: None, client.creds["customers"][0]["devices"][0]: 40000044}

    upload = _v1_body(client, [new_imei(), new_imei()])
    client.gen1("PUT", V1 + "/devices", json=upload).raise_for_status()
    _wait_v1(client, upload["transactionId"])
    removal = {
        "transactionId": uuid.uuid4().hex[:12],
        "resellerId": client.creds["gen1_reseller_id"],
        "customerId": upload["customerId"],
        "transactionType": "Delete",
        "removeTransactionId": upload["transactionId"],
    }
    assert client.gen1("PUT", V1 + "/devices/delete", json=removal).status_code == 200
    _wait_v1(client, removal["transactionId"])
    devices = client.state()["kdp"]["devices"]
    assert not set(upload["devices"]["list"]) & set(devices)


def test_two_tier_vendor_id(client: KnoxClient) -> None:
    vendor = client.creds["gen1_vendor_ids"][0]
    body = _v1_body(client, [new_imei()], vendorId=vendor)
    assert client.gen1("PUT", V1 + "/devices", json=body).status_code == 200
    r = client.gen1(
        "GET",
        V1 + "/devices/status",
        params={
            "resellerId": client.creds["gen1_reseller_id"],
            "vendorId": vendor,
            "transactionId": body["transactionId"],
        },
    )
    assert r.json()["totalCount"] == 1
    r = client.gen1(
        "GET",
        V1 + "/devices/status",
        params={
            "resellerId": client.creds["gen1_reseller_id"],
            "vendorId": "other",
            "transactionId": body["transactionId"],
        },
    )
    assert r.json()["totalCount"] == 0
    assert (
        client.gen1("PUT", V1 + "/devices", json=_v1_body(client, [new_imei()], vendorId="unknown")).status_code == 400
    )


def test_list_devices_v1_shape(client: KnoxClient) -> None:
    r = client.gen1("GET", V1 + "/devices", params={"resellerId": client.creds["gen1_reseller_id"]})
    body = r.json()
    assert set(body) == {"totalCount", "totalPage", "pageNum", "devices"}
    assert body["totalCount"] == 6
    assert all(set(d) == {"imei"} for d in body["devices"])


def test_customers_and_resellers(client: KnoxClient) -> None:
    body = {"resellerId": client.creds["gen1_reseller_id"]}
    customers = client.gen1("POST", V1 + "/customers", json=body).json()
    assert [c["customerId"] for c in customers["customers"]] == [
        c["customerId"] for c in client.creds["gen1_customers"]
    ]
    resellers = client.gen1("POST", V1 + "/resellers", json=body).json()
    assert resellers["resellers"][0]["resellerId"] == client.creds["gen1_reseller_id"]
    r = client.gen1("POST", V1 + "/customers", json={"resellerId": client.creds["reseller_id"]})
    assert r.status_code == 403
    assert r.json()["code"] == 40300000


def test_the_same_gen1_transaction_is_idempotent(client: KnoxClient) -> None:
    body = _v1_body(client, [new_imei()])
    a = client.gen1("PUT", V1 + "/devices", json=body)
    b = client.gen1("PUT", V1 + "/devices", json=body)
    assert a.json() == b.json()
    assert len(client.state()["kdp"]["transactions"]) == 1


def test_seed_001_v1_upload_example_replayed(client: KnoxClient) -> None:
    # The seed's V1 body with our Gen1 reseller and customer. Its IMEI fails the Luhn check (the documentation
    # uses placeholders), so the V1 status lists it with a code, every other member as in the seed.
    body = {
        "transactionId": "244303",
        "resellerId": client.creds["gen1_reseller_id"],
        "customerId": client.creds["gen1_customers"][0]["customerId"],
        "transactionType": "New",
        "devices": {"type": "IMEI", "list": ["351800000675702"]},
    }
    assert client.gen1("PUT", V1 + "/devices", json=body).json()["state"] == "Progress"
    tx = _wait_v1(client, "244303")["transactions"][0]
    assert tx["transactionId"] == "244303"
    assert tx["devices"] == [
        {
            "imei": "351800000675702",
            "code": 40000004,
            "message": "DEVICE_INVALID",
            "data": "The specified device is not valid.",
        }
    ]
