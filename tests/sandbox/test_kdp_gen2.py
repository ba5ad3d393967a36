"""KDP Gen2 (/kcs/v1/rp) conformance: seed 001 and 002 examples, knox-api.md section 3."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest

from sandbox.server import SandboxServer
from tests.sandbox.client import KnoxClient, bad_imei, is_luhn_imei, new_imei, new_serial


def _error_object(r, status: int, code: int, message: str) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"errorId", "code", "message", "data"}
    assert body["code"] == code
    assert body["message"] == message


def test_seed_001_v2_upload_example_is_accepted_and_its_imei_is_judged(client: KnoxClient) -> None:
    # The seed's body with our reseller/customer. Its IMEI fails the Luhn check, so, like the seed's V2 status
    # example, the status lists it with 40000004 DEVICE_INVALID.
    body = {
        "transactionId": "244303",
        "resellerId": client.creds["reseller_id"],
        "customerId": client.creds["customers"][0]["customerId"],
        "type": "IMEI",
        "devices": ["351826100005702"],
    }
    assert not is_luhn_imei("351826100005702")
    r = client.kdp("PUT", "/devices/upload", json=body)
    assert r.status_code == 200
    assert r.json() == {"transactionId": "244303", "state": "Progress", "code": 2000000, "message": "SUCCESS"}
    tx = client.wait_complete("244303")
    assert tx == {
        "transactionId": "244303",
        "state": "Complete",
        "type": "Put",
        "operationType": "UPLOAD",
        "devices": [
            {
                "imei": "351826100005702",
                "code": 40000004,
                "message": "DEVICE_INVALID",
                "data": "The specified device is not valid.",
            }
        ],
    }


def test_upload_goes_from_progress_to_complete_and_registers(client: KnoxClient) -> None:
    devices = [new_imei(), new_imei()]
    body = client.upload_body(devices, orderNo="PO-1", orderTime=1700000000)
    client.kdp("PUT", "/devices/upload", json=body).raise_for_status()
    status = client.status(body["transactionId"])
    assert status["devices"]["totalCount"] == 1
    assert status["devices"]["totalPage"] == 1
    assert status["devices"]["pageNum"] == 0
    assert status["devices"]["transactions"][0]["state"] == "Progress"
    tx = client.wait_complete(body["transactionId"])
    # Seed 001: when every device succeeded the inner `devices` element is missing.
    assert tx == {
        "transactionId": body["transactionId"],
        "state": "Complete",
        "type": "Put",
        "operationType": "UPLOAD",
        "orderNo": "PO-1",
    }
    state = client.state()["kdp"]
    for d in devices:
        rec = state["devices"][d]
        assert rec["customerId"] == body["customerId"]
        assert rec["resellerId"] == body["resellerId"]
        assert rec["type"] == "IMEI"
        assert rec["transactionId"] == body["transactionId"]
        assert rec["profileAliases"] == []
    assert state["transactions"][f"{body['resellerId']}/{body['transactionId']}"]["state"] == "Complete"


def test_status_lists_failed_devices_only(client: KnoxClient) -> None:
    good = new_imei()
    other_reseller = client.creds["second_reseller"]["device_ids"][0]
    other_customer = client.creds["customers"][1]["devices"][0]
    dup = new_imei()
    wrong_digit = bad_imei()
    body = client.upload_body([good, wrong_digit, "35693803564380", other_reseller, other_customer, dup, dup])
    client.kdp("PUT", "/devices/upload", json=body).raise_for_status()
    tx = client.wait_complete(body["transactionId"])
    failed = {d["imei"]: d for d in tx["devices"]}
    assert good not in failed
    assert failed[wrong_digit]["code"] == 40000004
    assert failed["35693803564380"]["code"] == 40000004
    assert failed[other_reseller]["code"] == 4092100
    assert failed[other_reseller]["message"] == "RESELLER_DEVICE_ALREADY_EXISTS"
    assert failed[other_customer]["code"] == 4092100
    assert failed[dup]["code"] == 40000004
    assert len(tx["devices"]) == 5
    state = client.state()["kdp"]["devices"]
    assert good in state
    assert dup not in state
    assert state[other_reseller]["resellerId"] == client.creds["second_reseller"]["reseller_id"]


def test_serial_number_uploads_use_serial_number_keys(client: KnoxClient) -> None:
    sn = new_serial()
    body = client.upload_body([sn, "bad-serial"], type="SN")
    client.kdp("PUT", "/devices/upload", json=body).raise_for_status()
    tx = client.wait_complete(body["transactionId"])
    assert tx["devices"] == [
        {
            "serialNumber": "bad-serial",
            "code": 40000004,
            "message": "DEVICE_INVALID",
            "data": "The specified device is not valid.",
        }
    ]
    listed = client.kdp("GET", "/devices", params={"customerId": body["customerId"]}).json()["devices"]
    item = next(d for d in listed if d.get("serialNumber") == sn)
    assert "mei" not in item
    assert client.state()["kdp"]["devices"][sn]["type"] == "SN"


def test_seed_002_delete_returns_40000044(client: KnoxClient) -> None:
    own = client.creds["customers"][0]["devices"]
    other_reseller = client.creds["second_reseller"]["device_ids"][0]
    other_customer = client.creds["customers"][1]["devices"][0]
    never = new_imei()
    body = client.upload_body([own[0], other_reseller, other_customer, never])
    r = client.kdp("PUT", "/devices/delete", json=body)
    assert r.json() == {
        "transactionId": body["transactionId"],
        "state": "Progress",
        "code": 2000000,
        "message": "SUCCESS",
    }
    tx = client.wait_complete(body["transactionId"])
    assert tx["type"] == "Delete"
    assert tx["operationType"] == "DELETE"
    failed = {d["imei"]: d for d in tx["devices"]}
    assert set(failed) == {other_reseller, other_customer, never}
    for d in failed.values():
        assert d["code"] == 40000044
        assert d["message"] == "RESELLER_CUSTOMER_DEVICE_NOT_FOUND"
    state = client.state()["kdp"]["devices"]
    assert own[0] not in state
    assert other_reseller in state
    assert other_customer in state


def test_list_devices_has_the_v2_fields(client: KnoxClient) -> None:
    r = client.kdp("GET", "/devices", params={"pageNum": 0, "pageSize": 5})
    body = r.json()
    assert body["code"] == "2000000"
    assert body["message"] == "SUCCESS"
    assert body["pageNum"] == 0
    assert body["pageSize"] == 5
    assert body["totalCount"] == 16
    assert body["totalPages"] == 4
    assert body["size"] == 5
    assert "totalPage" not in body
    device = body["devices"][0]
    assert set(device) == {
        "id",
        "createTime",
        "mei",
        "customerName",
        "customerId",
        "serialNumber",
        "meid",
        "model",
        "state",
        "uploadId",
    }
    assert device["state"] == "Verified"
    assert isinstance(device["createTime"], int) and device["createTime"] > 10**12
    assert is_luhn_imei(device["mei"])
    last = client.kdp("GET", "/devices", params={"pageNum": 3, "pageSize": 5}).json()
    assert last["size"] == 1


def test_list_devices_filters_by_customer_and_bounds_paging(client: KnoxClient) -> None:
    customer = client.creds["customers"][2]
    body = client.kdp("GET", "/devices", params={"customerId": customer["customerId"]}).json()
    assert sorted(d["mei"] for d in body["devices"]) == sorted(customer["devices"])
    assert {d["customerName"] for d in body["devices"]} == {customer["name"]}
    # Seed 001's V2 example answers pageSize 1000000: no smaller maximum is refused.
    assert client.kdp("GET", "/devices", params={"pageSize": 1_000_000}).json()["pageSize"] == 1_000_000
    _error_object(client.kdp("GET", "/devices", params={"pageSize": 1_000_001}), 400, 4000000, "RESOURCE_INVALID_PARAM")
    _error_object(client.kdp("GET", "/devices", params={"pageNum": -1}), 400, 4000000, "RESOURCE_INVALID_PARAM")
    _error_object(client.kdp("GET", "/devices", params={"customerId": "nope"}), 400, 40000011, "CUSTOMER_ID_INVALID")


def test_customers_lists_the_reseller_customers(client: KnoxClient) -> None:
    body = client.kdp("GET", "/customers").json()
    assert body["totalCount"] == 5
    assert body["pageNum"] == 0
    ids = [c["customerId"] for c in body["customers"]]
    assert ids == [c["customerId"] for c in client.creds["customers"]]
    assert {c["status"] for c in body["customers"]} == {"Verified", "Pending"}


def test_profile_aliases_come_from_headers(client: KnoxClient) -> None:
    customer = client.creds["customers"][2]
    headers = {"resellerId": client.creds["reseller_id"], "customerId": customer["customerId"]}
    r = client.kdp("GET", "/profilealias/kme", headers=headers)
    assert r.status_code == 200
    aliases = r.json()
    assert isinstance(aliases, list)
    assert [a["aliasName"] for a in aliases] == customer["profileAliases"]
    assert all(set(a) == {"aliasName", "profileId"} and a["profileId"] for a in aliases)
    assert 2 <= len(aliases) <= 4
    # Query parameters were moved to headers in July 2020.
    r = client.kdp("GET", "/profilealias/kme", params=headers)
    assert r.status_code == 400
    _error_object(
        client.kdp("GET", "/profilealias/kme", headers={**headers, "customerId": "000"}),
        400,
        40000011,
        "CUSTOMER_ID_INVALID",
    )


def test_upload_with_profile_aliases(client: KnoxClient) -> None:
    customer = client.creds["customers"][0]
    alias = customer["profileAliases"][1]
    device = new_imei()
    body = client.upload_body(
        [device], targetService="KME", profileAliases=[{"service": "KME", "aliasName": alias}], vendorId="V1"
    )
    client.kdp("PUT", "/devices/upload", json=body).raise_for_status()
    assert "devices" not in client.wait_complete(body["transactionId"])
    rec = client.state()["kdp"]["devices"][device]
    assert rec["profileAliases"] == [{"service": "KME", "aliasName": alias}]
    assert rec["targetService"] == "KME"


def test_upload_with_an_unknown_profile_alias_fails_per_device(client: KnoxClient) -> None:
    devices = [new_imei(), new_imei()]
    body = client.upload_body(devices, targetService="KME", profileAliases=[{"service": "KME", "aliasName": "Nope"}])
    client.kdp("PUT", "/devices/upload", json=body).raise_for_status()
    tx = client.wait_complete(body["transactionId"])
    assert [d["imei"] for d in tx["devices"]] == devices
    assert {d["code"] for d in tx["devices"]} == {4000000}
    assert not set(devices) & set(client.state()["kdp"]["devices"])


@pytest.mark.parametrize(
    ("change", "status", "code"),
    [
        ({"transactionId": None}, 400, 4000000),
        ({"transactionId": "x" * 33}, 400, 4000000),
        ({"resellerId": None}, 400, 4000000),
        ({"resellerId": "9999999999"}, 404, 40400001),
        ({"customerId": None}, 400, 40000011),
        ({"customerId": "9999999999"}, 400, 40000011),
        ({"type": "MEID"}, 400, 4000000),
        ({"devices": []}, 400, 4000000),
        ({"devices": "351826100005702"}, 400, 4000000),
        ({"devices": [351826100005702]}, 400, 4000000),
        ({"targetService": "KC"}, 400, 4000000),
        ({"profileAliases": [{"aliasName": "Default"}]}, 400, 4000000),
        ({"orderTime": "yesterday"}, 400, 4000000),
    ],
)
def test_whole_request_validation(client: KnoxClient, change: dict, status: int, code: int) -> None:
    body = client.upload_body([new_imei()])
    body.update(change)
    body = {k: v for k, v in body.items() if v is not None}
    r = client.kdp("PUT", "/devices/upload", json=body)
    assert r.status_code == status, r.text
    assert r.json()["code"] == code
    assert set(r.json()) == {"errorId", "code", "message", "data"}
    assert client.state()["kdp"]["transactions"] == {}


def test_it_refuses_more_than_the_maximum_devices(client: KnoxClient) -> None:
    body = client.upload_body([new_imei() for _ in range(1001)])
    _error_object(client.kdp("PUT", "/devices/upload", json=body), 400, 4000000, "RESOURCE_INVALID_PARAM")
    body = client.upload_body([new_imei() for _ in range(1000)])
    assert client.kdp("PUT", "/devices/upload", json=body).status_code == 200


def test_the_maximum_is_configurable(make_sandbox: Callable[..., SandboxServer]) -> None:
    server = make_sandbox(max_devices_per_request=5, kdp_rate_limit=0)
    c = KnoxClient(server.url, server.credentials_path)
    assert c.kdp("PUT", "/devices/upload", json=c.upload_body([new_imei() for _ in range(6)])).status_code == 400
    assert c.kdp("PUT", "/devices/upload", json=c.upload_body([new_imei() for _ in range(5)])).status_code == 200


def test_a_pending_customer_refuses_uploads(client: KnoxClient) -> None:
    pending = next(i for i, c in enumerate(client.creds["customers"]) if c["status"] == "Pending")
    r = client.kdp("PUT", "/devices/upload", json=client.upload_body([new_imei()], customer=pending))
    _error_object(r, 400, 40000011, "CUSTOMER_ID_INVALID")
    assert "pending" in r.json()["data"]


def test_the_other_resellers_customer_is_invalid(client: KnoxClient) -> None:
    body = client.upload_body([new_imei()])
    body["customerId"] = client.creds["second_reseller"]["customer_id"]
    _error_object(client.kdp("PUT", "/devices/upload", json=body), 400, 40000011, "CUSTOMER_ID_INVALID")


def test_the_other_reseller_id_is_forbidden(client: KnoxClient) -> None:
    body = client.upload_body([new_imei()])
    body["resellerId"] = client.creds["second_reseller"]["reseller_id"]
    _error_object(client.kdp("PUT", "/devices/upload", json=body), 403, 40300000, "AUTHORIZATION_FAIL")


def test_the_same_transaction_id_is_idempotent(client: KnoxClient) -> None:
    device = new_imei()
    body = client.upload_body([device])
    first = client.kdp("PUT", "/devices/upload", json=body)
    again = client.kdp("PUT", "/devices/upload", json=body)
    assert first.json() == again.json()
    client.wait_complete(body["transactionId"])
    after = client.kdp("PUT", "/devices/upload", json=body)
    assert after.status_code == 200
    assert after.json()["transactionId"] == body["transactionId"]
    state = client.state()
    assert len(state["kdp"]["transactions"]) == 1
    assert state["counters"]["duplicate_device_submissions"] == 0
    # The same id for a different request is refused.
    other = {**body, "devices": [new_imei()]}
    _error_object(client.kdp("PUT", "/devices/upload", json=other), 400, 4000000, "RESOURCE_INVALID_PARAM")


def test_it_counts_duplicate_device_submissions(client: KnoxClient) -> None:
    device = new_imei()
    first = client.upload_body([device])
    client.kdp("PUT", "/devices/upload", json=first).raise_for_status()
    client.wait_complete(first["transactionId"])
    second = client.upload_body([device, new_imei()])
    client.kdp("PUT", "/devices/upload", json=second).raise_for_status()
    tx = client.wait_complete(second["transactionId"])
    # Same reseller, same customer: a successful no-op, but counted.
    assert "devices" not in tx
    # A demo device of another customer of ours: fails, and is counted too.
    third = client.upload_body([client.creds["customers"][1]["devices"][0]])
    client.kdp("PUT", "/devices/upload", json=third).raise_for_status()
    assert client.wait_complete(third["transactionId"])["devices"][0]["code"] == 4092100
    assert client.state()["counters"]["duplicate_device_submissions"] == 2


def test_two_transactions_racing_for_a_device_are_settled_in_order(client: KnoxClient) -> None:
    device = new_imei()
    a = client.upload_body([device], customer=0)
    b = client.upload_body([device], customer=1)
    client.kdp("PUT", "/devices/upload", json=a).raise_for_status()
    client.kdp("PUT", "/devices/upload", json=b).raise_for_status()
    assert "devices" not in client.wait_complete(a["transactionId"])
    assert client.wait_complete(b["transactionId"])["devices"][0]["code"] == 4092100


def test_status_of_an_unknown_transaction_is_empty(client: KnoxClient) -> None:
    body = client.status(uuid.uuid4().hex)
    assert body == {"devices": {"totalCount": 0, "totalPage": 0, "pageNum": 0, "transactions": []}}
    _error_object(client.kdp("GET", "/devices/status"), 400, 4000000, "RESOURCE_INVALID_PARAM")


def test_delete_after_upload_round_trip(client: KnoxClient) -> None:
    device = new_imei()
    up = client.upload_body([device])
    client.kdp("PUT", "/devices/upload", json=up).raise_for_status()
    client.wait_complete(up["transactionId"])
    down = client.upload_body([device])
    client.kdp("PUT", "/devices/delete", json=down).raise_for_status()
    assert "devices" not in client.wait_complete(down["transactionId"])
    assert device not in client.state()["kdp"]["devices"]


def test_wrong_method_and_unknown_path(client: KnoxClient) -> None:
    assert client.kdp("POST", "/devices/upload", json={}).status_code == 405
    assert client.kdp("GET", "/nothing-here").status_code == 404


def test_it_handles_a_large_registry(client: KnoxClient) -> None:
    txs = []
    for _ in range(5):
        body = client.upload_body([new_imei() for _ in range(1000)])
        client.kdp("PUT", "/devices/upload", json=body).raise_for_status()
        txs.append(body["transactionId"])
    for tx in txs:
        client.wait_complete(tx)
    listed = client.kdp("GET", "/devices", params={"pageNum": 5, "pageSize": 1000}).json()
    assert listed["totalCount"] == 5016
    assert listed["size"] == 16
