"""Knox Guard v1.1 conformance: seed 003 and knox-api.md section 4."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.sandbox.client import KnoxClient, is_luhn_imei, new_imei


def _devices(client: KnoxClient, state: str) -> list[dict[str, Any]]:
    return [d for d in client.creds["guard"]["devices"] if d["state"] == state]


def _fail(r, status: int, code: int, message: str) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["result"] == "FAIL"
    assert body["error"]["code"] == code
    assert body["error"]["message"] == message
    assert body["error"]["reason"]


def _blink(uid: str, **overrides: Any) -> dict[str, Any]:
    body = {
        "deviceUid": uid,
        "tel": "+44 20 7946 0001",
        "interval": 3600,
        "message": "Payment overdue",
        "timeLimitEnable": True,
        "daysLimitEnable": False,
        "timeLimit": [23, 7],
        "daysLimit": None,
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not ...}


def test_authorization_returns_the_account(client: KnoxClient) -> None:
    body = client.kg("GET", "/authorization").json()
    assert body["result"] == "SUCCESS"
    assert set(body["user"]) == {"companyName", "country", "email", "name", "phoneNumber"}


def test_the_demo_world_has_devices_in_every_main_state(client: KnoxClient) -> None:
    states = {d["state"] for d in client.creds["guard"]["devices"]}
    assert {"Pending", "Enrolled", "Locked", "Blinked", "Completed"} <= states


def test_approve_moves_pending_to_accepted_then_enrolled(client: KnoxClient) -> None:
    dev = _devices(client, "Pending")[0]
    r = client.kg(
        "POST", "/devices/approve", json={"deviceUid": dev["deviceUid"], "approveId": "LOAN-X1", "approveComment": "ok"}
    )
    assert r.status_code == 200
    assert r.json() == {"result": "SUCCESS", "objectId": dev["objectId"], "requestedId": dev["deviceUid"]}
    assert client.state()["guard"]["devices"][dev["deviceUid"]]["state"] == "Accepted"
    settled = client.wait_guard_state(dev["deviceUid"], "Enrolled")
    assert settled["approveId"] == "LOAN-X1"


def test_seed_003_approve_example_names_an_unknown_device(client: KnoxClient) -> None:
    r = client.kg(
        "POST",
        "/devices/approve",
        json={"deviceUid": "453700000000106", "approveId": "string", "approveComment": "string"},
    )
    _fail(r, 404, 4040300, "DEVICE_NOT_FOUND")


def test_approve_needs_a_device_uid_and_valid_fields(client: KnoxClient) -> None:
    dev = _devices(client, "Pending")[0]
    _fail(
        client.kg("POST", "/devices/approve", json={"objectId": dev["objectId"]}),
        400,
        4000000,
        "RESOURCE_INVALID_PARAM",
    )
    _fail(
        client.kg("POST", "/devices/approve", json={"deviceUid": dev["deviceUid"], "approveId": "x" * 51}),
        400,
        4000000,
        "RESOURCE_INVALID_PARAM",
    )
    _fail(
        client.kg("POST", "/devices/approve", json={"deviceUid": dev["deviceUid"], "approveComment": "x" * 1001}),
        400,
        4000000,
        "RESOURCE_INVALID_PARAM",
    )
    taken = _devices(client, "Enrolled")[0]["approveId"]
    _fail(
        client.kg("POST", "/devices/approve", json={"deviceUid": dev["deviceUid"], "approveId": taken}),
        400,
        4000000,
        "RESOURCE_INVALID_PARAM",
    )
    assert (
        client.kg("POST", "/devices/approve", json={"deviceUid": dev["deviceUid"], "approveId": "y" * 50}).status_code
        == 200
    )


def test_reject_then_delete(client: KnoxClient) -> None:
    dev = _devices(client, "Pending")[1]
    assert client.kg("POST", "/devices/reject", json={"deviceUid": dev["deviceUid"]}).status_code == 200
    assert client.state()["guard"]["devices"][dev["deviceUid"]]["state"] == "Rejected"
    assert client.kg("POST", "/devices/delete", json={"deviceUid": dev["deviceUid"]}).status_code == 200
    assert dev["deviceUid"] not in client.state()["guard"]["devices"]
    _fail(client.kg("POST", "/devices/delete", json={"objectId": dev["objectId"]}), 404, 4040300, "DEVICE_NOT_FOUND")


def test_lock_and_unlock(client: KnoxClient) -> None:
    dev = _devices(client, "Enrolled")[0]
    r = client.kg("POST", "/devices/lock", json={"deviceUid": dev["deviceUid"], "message": "Call us", "email": "a@b.c"})
    assert r.json()["result"] == "SUCCESS"
    assert client.state()["guard"]["devices"][dev["deviceUid"]]["state"] == "Locking"
    # A device in a transitional state accepts no action.
    r = client.kg("POST", "/devices/unlock", json={"deviceUid": dev["deviceUid"]})
    _fail(r, 400, 4000310, "DEVICE_STATE_INVALID")
    client.wait_guard_state(dev["deviceUid"], "Locked")
    assert client.kg("POST", "/devices/unlock", json={"deviceUid": dev["deviceUid"]}).status_code == 200
    assert client.state()["guard"]["devices"][dev["deviceUid"]]["state"] == "Unlocking"
    client.wait_guard_state(dev["deviceUid"], "Enrolled")


def test_blink_and_stop_by_unlock(client: KnoxClient) -> None:
    dev = _devices(client, "Enrolled")[0]
    assert client.kg("POST", "/devices/blink", json=_blink(dev["deviceUid"])).status_code == 200
    assert client.state()["guard"]["devices"][dev["deviceUid"]]["state"] == "StartingReminder"
    blinked = client.wait_guard_state(dev["deviceUid"], "Blinked")
    assert blinked["reminder"]["interval"] == 3600
    assert client.kg("POST", "/devices/unlock", json={"deviceUid": dev["deviceUid"]}).status_code == 200
    assert client.state()["guard"]["devices"][dev["deviceUid"]]["state"] == "StoppingReminder"
    client.wait_guard_state(dev["deviceUid"], "Enrolled")


def test_unlock_of_an_enrolled_device_is_accepted(client: KnoxClient) -> None:
    """Seed 003's state table: "Enrolled — This state allows the device to be controlled by Knox Guard to lock,
    unlock, send a message, or blink a device." It passes through Unlocking and stays Enrolled."""
    dev = _devices(client, "Enrolled")[0]
    assert client.kg("POST", "/devices/unlock", json={"deviceUid": dev["deviceUid"]}).status_code == 200
    assert client.state()["guard"]["devices"][dev["deviceUid"]]["state"] == "Unlocking"
    client.wait_guard_state(dev["deviceUid"], "Enrolled")


def test_async_bodies_in_both_forms(client: KnoxClient) -> None:
    """`…Async` takes the synchronous body with deviceUid a list (public clients, knox-api.md §7), and still the
    {"deviceList": [...]} form this project guessed first (§6 q17: lenient where the evidence is not a seed)."""
    first, second = _devices(client, "Enrolled")[:2]
    listed = {"deviceUid": [first["deviceUid"]], "message": "m", "tel": "+1"}
    r = client.kg("POST", "/devices/sendMessageAsync", json=listed, tx="form1")
    assert r.status_code == 200
    wrapped = {"deviceList": [{"deviceUid": second["deviceUid"], "message": "m", "tel": "+1"}]}
    r = client.kg("POST", "/devices/sendMessageAsync", json=wrapped, tx="form2")
    assert r.status_code == 200
    results = client.state()["guard"]["transactions"]
    assert (results["form1"]["success"], results["form2"]["success"]) == (1, 1)
    r = client.kg("POST", "/devices/sendMessageAsync", json={"message": "m"}, tx="form3")
    assert r.status_code == 400 and r.json()["error"]["code"] == 4000000


def test_complete_then_delete(client: KnoxClient) -> None:
    dev = _devices(client, "Locked")[0]
    assert client.kg("POST", "/devices/complete", json={"approveId": dev["approveId"]}).status_code == 200
    assert client.state()["guard"]["devices"][dev["deviceUid"]]["state"] == "Completing"
    client.wait_guard_state(dev["deviceUid"], "Completed")
    assert client.kg("POST", "/devices/delete", json={"deviceUid": dev["deviceUid"]}).status_code == 200


@pytest.mark.parametrize(
    ("state", "action", "body"),
    [
        ("Pending", "lock", {"message": "m", "tel": "1"}),
        ("Pending", "complete", {}),
        ("Pending", "sendMessage", {"message": "m", "tel": "1"}),
        ("Enrolled", "approve", {}),
        ("Enrolled", "reject", {}),
        ("Enrolled", "delete", {}),
        ("Pending", "unlock", {}),
        ("Locked", "lock", {"message": "m", "tel": "1"}),
        ("Blinked", "blink", {"interval": 60, "message": "m", "tel": "1"}),
        ("Completed", "lock", {"message": "m", "tel": "1"}),
        ("Completed", "complete", {}),
    ],
)
def test_illegal_transitions_are_4000310(client: KnoxClient, state: str, action: str, body: dict[str, Any]) -> None:
    dev = _devices(client, state)[0]
    r = client.kg("POST", f"/devices/{action}", json={"deviceUid": dev["deviceUid"], **body})
    _fail(r, 400, 4000310, "DEVICE_STATE_INVALID")
    assert client.state()["guard"]["devices"][dev["deviceUid"]]["state"] == state


def test_send_message_where_the_device_is_controlled(client: KnoxClient) -> None:
    for state in ("Enrolled", "Locked", "Blinked"):
        dev = _devices(client, state)[0]
        body = {"deviceUid": dev["deviceUid"], "tel": "+1", "message": "hello", "enableFullscreen": True}
        assert client.kg("POST", "/devices/sendMessage", json=body).status_code == 200
        assert client.state()["guard"]["devices"][dev["deviceUid"]]["state"] == state


def test_unknown_device_is_404(client: KnoxClient) -> None:
    for body in ({"deviceUid": new_imei()}, {"objectId": "NOPE"}, {"approveId": "NOPE"}):
        _fail(client.kg("POST", "/devices/unlock", json=body), 404, 4040300, "DEVICE_NOT_FOUND")


def test_identifier_precedence(client: KnoxClient) -> None:
    a, b = _devices(client, "Locked")[:2]
    # objectId wins over deviceUid, which wins over approveId.
    r = client.kg("POST", "/devices/unlock", json={"objectId": a["objectId"], "deviceUid": b["deviceUid"]})
    assert r.json()["objectId"] == a["objectId"]
    assert r.json()["requestedId"] == a["objectId"]
    r = client.kg("POST", "/devices/unlock", json={"deviceUid": b["deviceUid"], "approveId": a["approveId"]})
    assert r.json()["objectId"] == b["objectId"]
    _fail(client.kg("POST", "/devices/unlock", json={}), 400, 4000000, "RESOURCE_INVALID_PARAM")


@pytest.mark.parametrize(
    ("overrides", "ok"),
    [
        ({"interval": 2}, False),
        ({"interval": 3}, True),
        ({"interval": 86400}, True),
        ({"interval": 86401}, False),
        ({"interval": "60"}, False),
        ({"interval": ...}, False),
        ({"message": "m" * 200}, True),
        ({"message": "m" * 201}, False),
        ({"message": ...}, False),
        ({"tel": ...}, False),
        ({"tel": ..., "email": "pay@lender.example"}, True),
        ({"timeLimit": [23, 7, 1]}, False),
        ({"timeLimit": [23]}, False),
        ({"timeLimit": [24, 7]}, False),
        ({"timeLimit": [-1, 7]}, False),
        ({"timeLimit": [0, 23]}, True),
        ({"timeLimit": None}, False),
        ({"timeLimitEnable": False, "timeLimit": None}, True),
        ({"timeLimitEnable": "yes"}, False),
        ({"timeLimitEnable": False, "daysLimitEnable": True, "timeLimit": [6, 7], "daysLimit": [0, 1]}, True),
        ({"timeLimitEnable": False, "daysLimitEnable": True, "timeLimit": [6, 7], "daysLimit": None}, False),
        ({"timeLimitEnable": False, "daysLimitEnable": True, "timeLimit": None, "daysLimit": [0, 1]}, False),
        ({"daysLimitEnable": True, "daysLimit": [0, 7]}, False),
        ({"daysLimitEnable": True, "daysLimit": [0, 1, 2]}, False),
        ({"daysLimitEnable": True, "daysLimit": [6, 0]}, True),
    ],
)
def test_blink_validation(client: KnoxClient, overrides: dict[str, Any], ok: bool) -> None:
    dev = _devices(client, "Enrolled")[0]
    r = client.kg("POST", "/devices/blink", json=_blink(dev["deviceUid"], **overrides))
    if ok:
        assert r.status_code == 200, r.text
    else:
        _fail(r, 400, 4000000, "RESOURCE_INVALID_PARAM")
        assert client.state()["guard"]["devices"][dev["deviceUid"]]["state"] == "Enrolled"


@pytest.mark.parametrize("action", ["lock", "sendMessage"])
def test_lock_and_message_follow_the_blink_message_length_and_take_a_contact_optionally(
    client: KnoxClient, action: str
) -> None:
    """Seed 003 limits the message to 200 characters and requires a phone number or email for blink only; a
    public C# client sends sendMessage without one (knox-api.md §7), so lock and sendMessage accept either."""
    dev = _devices(client, "Enrolled")[0]
    base = {"deviceUid": dev["deviceUid"]}
    _fail(
        client.kg("POST", f"/devices/{action}", json={**base, "message": "m" * 201, "tel": "1"}),
        400,
        4000000,
        "RESOURCE_INVALID_PARAM",
    )
    assert client.kg("POST", f"/devices/{action}", json={**base, "message": "m"}).status_code == 200
    if action == "sendMessage":
        body = {**base, "message": "m" * 200, "email": "x@y.z"}
        assert client.kg("POST", f"/devices/{action}", json=body).status_code == 200


def test_blink_needs_a_phone_number_or_an_email(client: KnoxClient) -> None:
    """Seed 003 (blink): "You must provide either a phone number or an email address"."""
    dev = _devices(client, "Enrolled")[0]
    body = {"deviceUid": dev["deviceUid"], "message": "m", "interval": 3600}
    _fail(client.kg("POST", "/devices/blink", json=body), 400, 4000000, "RESOURCE_INVALID_PARAM")


def test_async_results_by_transaction_id(client: KnoxClient) -> None:
    pending = _devices(client, "Pending")
    unknown = new_imei()
    tx = uuid.uuid4().hex
    body = {
        "deviceList": [
            {"deviceUid": pending[0]["deviceUid"]},
            {"deviceUid": pending[1]["deviceUid"]},
            {"deviceUid": unknown},
        ]
    }
    r = client.kg("POST", "/devices/approveAsync", json=body, tx=tx)
    assert r.status_code == 200
    assert r.json()["transactionId"] == tx
    result = client.kg("POST", "/transaction", json={"transactionId": tx}).json()
    # The documented example: count 3, success 2, fail 1, and only the failure in resultList, code as a string.
    assert result == {
        "count": 3,
        "success": 2,
        "fail": 1,
        "transactionId": tx,
        "resultList": [
            {
                "result": "FAIL",
                "requestedId": unknown,
                "error": {
                    "code": "4040300",
                    "message": "DEVICE_NOT_FOUND",
                    "reason": result["resultList"][0]["error"]["reason"],
                },
            }
        ],
    }
    client.wait_guard_state(pending[0]["deviceUid"], "Enrolled")
    # Sending the same request again does not apply it twice.
    assert client.kg("POST", "/devices/approveAsync", json=body, tx=tx).status_code == 200
    assert client.kg("POST", "/transaction", json={"transactionId": tx}).json()["success"] == 2
    _fail(client.kg("POST", "/devices/rejectAsync", json=body, tx=tx), 400, 4000000, "RESOURCE_INVALID_PARAM")


def test_async_limits_and_header(client: KnoxClient) -> None:
    one = {"deviceList": [{"deviceUid": new_imei()}]}
    _fail(client.kg("POST", "/devices/lockAsync", json=one), 400, 4000000, "RESOURCE_INVALID_PARAM")
    many = {"deviceList": [{"deviceUid": new_imei()} for _ in range(1001)]}
    _fail(
        client.kg("POST", "/devices/lockAsync", json=many, tx=uuid.uuid4().hex),
        400,
        4000316,
        "DEVICE_BULK_OPERATION_LIMIT_EXCEEDED",
    )
    _fail(
        client.kg("POST", "/devices/lockAsync", json={"deviceList": []}, tx=uuid.uuid4().hex),
        400,
        4000000,
        "RESOURCE_INVALID_PARAM",
    )
    _fail(client.kg("POST", "/transaction", json={"transactionId": "unknown"}), 400, 4000000, "RESOURCE_INVALID_PARAM")


def test_every_async_action_exists(client: KnoxClient) -> None:
    enrolled = _devices(client, "Enrolled")
    cases = {
        "blinkAsync": _blink(enrolled[0]["deviceUid"]),
        "lockAsync": {"deviceUid": enrolled[1]["deviceUid"], "message": "m", "tel": "1"},
        "sendMessageAsync": {"deviceUid": enrolled[2]["deviceUid"], "message": "m", "tel": "1"},
        "unlockAsync": {"deviceUid": _devices(client, "Locked")[0]["deviceUid"]},
        "completeAsync": {"deviceUid": _devices(client, "Blinked")[0]["deviceUid"]},
        "deleteAsync": {"deviceUid": _devices(client, "Rejected")[0]["deviceUid"]},
        "rejectAsync": {"deviceUid": _devices(client, "Pending")[0]["deviceUid"]},
    }
    for action, item in cases.items():
        tx = uuid.uuid4().hex
        assert client.kg("POST", f"/devices/{action}", json={"deviceList": [item]}, tx=tx).status_code == 200
        result = client.kg("POST", "/transaction", json={"transactionId": tx}).json()
        assert (result["success"], result["fail"]) == (1, 0), (action, result)


@pytest.mark.parametrize("tx", ["a" * 33, "has-dash", "spa ce"])
def test_the_transaction_id_header_is_alphanumeric_and_short(client: KnoxClient, tx: str) -> None:
    _fail(client.kg("GET", "/authorization", tx=tx), 400, 4000000, "RESOURCE_INVALID_PARAM")


def test_uploads(client: KnoxClient) -> None:
    good, other = new_imei(), new_imei()
    existing = _devices(client, "Enrolled")[0]["deviceUid"]
    body = {
        "deviceList": [
            {"deviceUid": good, "approveId": "NEW-1"},
            {"deviceUid": other},
            {"deviceUid": existing},
            {"deviceUid": "nonsense"},
        ],
        "autoAccept": False,
        "autoLock": False,
        "applySimControl": False,
        "enableBlockFactoryReset": False,
    }
    r = client.kg("POST", "/devices/uploads", json=body)
    assert r.status_code == 200
    answer = r.json()
    assert answer["result"] == "SUCCESS"
    assert "uploadID" in answer and "uploadId" not in answer
    assert answer["uploadStatus"] == "Progress"
    assert (answer["totalDeviceCount"], answer["validDeviceCount"], answer["invalidDeviceCount"]) == (4, 2, 2)
    assert {i["deviceUid"] for i in answer["invalidReasons"]} == {existing, "nonsense"}
    assert client.state()["guard"]["devices"][good]["state"] == "Pending"

    listing = client.kg("GET", "/devices/uploads", params={"pageNum": 0, "pageSize": 10}).json()
    assert listing["result"] == "SUCCESS"
    assert listing["totalCount"] == 2  # the demo world's portal upload and ours
    detail = client.kg("GET", f"/devices/uploads/{answer['uploadID']}").json()
    assert detail["result"] == "SUCCESS"
    assert detail["status"] in ("Progress", "Complete")
    assert len(detail["devices"]) == 4
    _fail(client.kg("GET", "/devices/uploads", params={"pageSize": 1001}), 400, 4000000, "RESOURCE_INVALID_PARAM")
    _fail(client.kg("GET", "/devices/uploads", params={"pageSize": 0}), 400, 4000000, "RESOURCE_INVALID_PARAM")
    _fail(client.kg("GET", "/devices/uploads/unknown"), 400, 4000000, "RESOURCE_INVALID_PARAM")


def test_upload_limits_and_auto_accept(client: KnoxClient) -> None:
    too_many = {"deviceList": [{"deviceUid": new_imei()} for _ in range(10_001)]}
    _fail(client.kg("POST", "/devices/uploads", json=too_many), 400, 4000316, "DEVICE_BULK_OPERATION_LIMIT_EXCEEDED")
    _fail(client.kg("POST", "/devices/uploads", json={}), 400, 4000000, "RESOURCE_INVALID_PARAM")
    uid = new_imei()
    assert (
        client.kg("POST", "/devices/uploads", json={"deviceList": [{"deviceUid": uid}], "autoAccept": True}).status_code
        == 200
    )
    client.wait_guard_state(uid, "Enrolled")


def test_devices_list(client: KnoxClient) -> None:
    body = client.kg("POST", "/devices/list", json={"pageNum": 0, "pageSize": 5}).json()
    assert body["result"] == "SUCCESS"
    assert body["totalCount"] == len(client.creds["guard"]["devices"])
    assert len(body["deviceList"]) == 5
    item = body["deviceList"][0]
    assert {"id", "imei", "approveId", "state"} <= set(item)
    assert is_luhn_imei(item["imei"])
    page3 = client.kg("POST", "/devices/list", json={"pageNum": 2, "pageSize": 5}).json()
    assert len(page3["deviceList"]) == body["totalCount"] - 10
    target = client.creds["guard"]["devices"][3]
    found = client.kg(
        "POST", "/devices/list", json={"pageNum": 0, "pageSize": 100, "search": target["deviceUid"]}
    ).json()
    assert [d["id"] for d in found["deviceList"]] == [target["objectId"]]
    _fail(
        client.kg("POST", "/devices/list", json={"pageNum": 0, "pageSize": 1001}),
        400,
        4000000,
        "RESOURCE_INVALID_PARAM",
    )


def test_seed_003_examples_after_uploading_their_device(client: KnoxClient) -> None:
    uid = "453700000000106"
    assert is_luhn_imei(uid)
    assert client.kg("POST", "/devices/uploads", json={"deviceList": [{"deviceUid": uid}]}).status_code == 200
    r = client.kg(
        "POST", "/devices/approve", json={"deviceUid": uid, "approveId": "string", "approveComment": "string"}
    )
    assert r.status_code == 200
    assert r.json()["requestedId"] == uid
    client.wait_guard_state(uid, "Enrolled")
    # knox-api.md section 4.8's blink example.
    blink = {
        "deviceUid": uid,
        "tel": "+44 7700 900000",
        "interval": 3600,
        "message": "Payment overdue",
        "timeLimitEnable": True,
        "daysLimitEnable": False,
        "timeLimit": [23, 7],
        "daysLimit": None,
    }
    assert client.kg("POST", "/devices/blink", json=blink).json()["result"] == "SUCCESS"
    client.wait_guard_state(uid, "Blinked")
