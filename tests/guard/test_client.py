"""Knox Guard client rules without a sandbox: parameter validation at every edge seed 003 sets, request bodies per
action, the states each action is allowed from, and the parsing of asynchronous results (the network edge mocked
with `responses`, through the shared HTTP layer)."""

from __future__ import annotations

import json

import pytest
import responses

from guard.client import (
    ACTIONS,
    ActionParams,
    DeviceRef,
    GuardClient,
    GuardValidationError,
    action_body,
    parse_listed,
    validate,
)
from portal.knox.auth import parse_keys_json
from portal.knox.http import KnoxSession
from portal.models import KnoxAccount
from tests.keys import keys_json

BASE = "http://knox.test"
KG = f"{BASE}/kcs/v1.1/kg"
TOKEN_URL = f"{BASE}/ams/v1/users/accesstoken"
CONTACT = {"tel": "+44 20 7946 0000"}


def problems(action: str, **fields) -> dict[str, str]:
    """The fields validate() objects to, with a sentence each ({} when valid)."""
    try:
        validate(action, ActionParams(**fields))
    except GuardValidationError as e:
        assert all(isinstance(v, str) and v.endswith(".") for v in e.errors.values()), e.errors
        return e.errors
    return {}


def blink(**fields) -> dict[str, str]:
    return problems("blink", **{"message": "Payment due", **CONTACT, "interval": 3600, **fields})


# --- validate(): seed 003's field rules -------------------------------------------------------------------------


@pytest.mark.parametrize(("interval", "ok"), [(2, False), (3, True), (86_400, True), (86_401, False)])
def test_blink_interval_is_3_to_86400_seconds(interval, ok):
    found = blink(interval=interval)
    assert (found == {}) is ok
    if not ok:
        assert list(found) == ["interval"] and f"it is {interval:,}" in found["interval"]


def test_blink_needs_an_interval():
    assert "how often" in blink(interval=None)["interval"]


@pytest.mark.parametrize("action", ["lock", "blink", "message"])
def test_the_message_is_required_and_at_most_200_characters(action):
    extra = {"interval": 60} if action == "blink" else {}
    assert problems(action, message="x" * 200, **CONTACT, **extra) == {}
    too_long = problems(action, message="x" * 201, **CONTACT, **extra)
    assert list(too_long) == ["message"] and "201 characters" in too_long["message"] and "200" in too_long["message"]
    assert "required" in problems(action, message="", **CONTACT, **extra)["message"]
    assert "required" in problems(action, message="   ", **CONTACT, **extra)["message"]  # blank is missing


@pytest.mark.parametrize("action", ["lock", "blink", "message"])
def test_a_phone_number_or_an_email_is_required(action):
    extra = {"interval": 60} if action == "blink" else {}
    missing = problems(action, message="Pay", **extra)
    assert list(missing) == ["tel"] and "phone number or an email" in missing["tel"]
    assert problems(action, message="Pay", email="pay@example.org", **extra) == {}
    assert problems(action, message="Pay", tel="020 7946 0000", **extra) == {}


def test_a_malformed_email_or_phone_number_is_refused():
    assert list(problems("lock", message="Pay", email="pay at example.org")) == ["email"]
    assert list(problems("lock", message="Pay", tel="call me")) == ["tel"]
    assert list(problems("lock", message="Pay", tel="123", email="nope")) == ["email"]


@pytest.mark.parametrize(
    ("time_limit", "ok"),
    [((22, 7), True), ((0, 23), True), ((22,), False), ((1, 2, 3), False), ((22, 24), False), ((-1, 7), False)],
)
def test_quiet_hours_are_exactly_two_hours_0_to_23(time_limit, ok):
    found = blink(time_limit=time_limit)
    assert (found == {}) is ok
    if not ok:
        assert list(found) == ["time_limit"] and "exactly two hours" in found["time_limit"]


@pytest.mark.parametrize(("days_limit", "ok"), [((6, 0), True), ((1, 5), True), ((1, 7), False), ((3,), False)])
def test_quiet_days_are_exactly_two_days_0_to_6(days_limit, ok):
    found = blink(time_limit=(22, 7), days_limit=days_limit)
    assert (found == {}) is ok
    if not ok:
        assert list(found) == ["days_limit"] and "Sunday" in found["days_limit"]


def test_quiet_days_need_quiet_hours():
    found = blink(days_limit=(6, 0))
    assert list(found) == ["time_limit"] and "timeLimit with daysLimit" in found["time_limit"]


def test_every_problem_is_reported_at_once():
    found = problems(
        "blink", message="x" * 201, email="bad", interval=2, time_limit=(1, 2, 3), days_limit=(7, 0)
    )  # fmt: skip
    assert set(found) == {"message", "email", "interval", "time_limit", "days_limit"}


@pytest.mark.parametrize(("length", "ok"), [(50, True), (51, False)])
def test_approve_id_is_at_most_50_characters(length, ok):
    found = problems("approve", approve_id="A" * length)
    assert (found == {}) is ok
    if not ok:
        assert list(found) == ["approve_id"] and "51 characters" in found["approve_id"]


@pytest.mark.parametrize(("length", "ok"), [(1000, True), (1001, False)])
def test_approve_comment_is_at_most_1000_characters(length, ok):
    found = problems("approve", approve_comment="c" * length)
    assert (found == {}) is ok
    if not ok:
        assert list(found) == ["approve_comment"] and "1001 characters" in found["approve_comment"]


@pytest.mark.parametrize("action", ["approve", "reject", "unlock", "stop-blink", "complete", "delete"])
def test_actions_without_a_message_need_no_parameters(action):
    assert problems(action) == {}


# --- action_body(): what goes on the wire -----------------------------------------------------------------------

FULL = DeviceRef(object_id="T8F2Z455PD312NH5T1Q5Y9Y", device_uid="359221581300448", approve_id="LOAN-0001")


@pytest.mark.parametrize(
    ("ref", "sent"),
    [
        (FULL, {"objectId": "T8F2Z455PD312NH5T1Q5Y9Y"}),
        (DeviceRef(device_uid="359221581300448", approve_id="LOAN-0001"), {"deviceUid": "359221581300448"}),
        (DeviceRef(approve_id="LOAN-0001"), {"approveId": "LOAN-0001"}),
    ],
)
def test_only_the_winning_identifier_is_sent(ref, sent):
    """objectId > deviceUid > approveId (seed 003): Knox uses the first present even if it matches nothing, so the
    others must not travel with it."""
    for action in ("reject", "unlock", "stop-blink", "complete", "delete"):
        assert action_body(action, ref, ActionParams()) == sent
    assert ref.requested_id == next(iter(sent.values()))


def test_a_device_without_any_identifier_cannot_be_sent():
    with pytest.raises(ValueError, match="objectId, a deviceUid or an approveId"):
        action_body("lock", DeviceRef(), ActionParams(message="m", **CONTACT))


def test_approve_always_sends_the_device_uid():
    assert action_body("approve", FULL, ActionParams()) == {"deviceUid": "359221581300448"}
    body = action_body("approve", FULL, ActionParams(approve_id="LOAN-9", approve_comment="KYC done"))
    assert body == {"deviceUid": "359221581300448", "approveId": "LOAN-9", "approveComment": "KYC done"}


def test_lock_and_message_carry_the_message_and_contact():
    p = ActionParams(message="Payment overdue", email=" pay@example.org ", tel=" +44 20 7946 0000 ")
    for action in ("lock", "message"):
        assert action_body(action, FULL, p) == {
            "objectId": FULL.object_id, "message": "Payment overdue", "email": "pay@example.org",
            "tel": "+44 20 7946 0000",
        }  # fmt: skip
    assert "email" not in action_body("lock", FULL, ActionParams(message="m", tel="123"))


def test_blink_carries_the_interval_and_the_quiet_periods():
    plain = action_body("blink", FULL, ActionParams(message="Due", tel="123", interval=3600))
    assert plain == {
        "objectId": FULL.object_id, "message": "Due", "tel": "123", "interval": 3600,
        "timeLimitEnable": False, "daysLimitEnable": False, "timeLimit": None, "daysLimit": None,
    }  # fmt: skip
    # Seed 003's days-window example, exactly: silent from 06:00 Sunday to 07:00 Monday.
    span = action_body(
        "blink", FULL, ActionParams(message="Due", tel="123", interval=60, time_limit=(6, 7), days_limit=(0, 1))
    )
    assert {k: span[k] for k in ("timeLimitEnable", "daysLimitEnable", "timeLimit", "daysLimit")} == {
        "timeLimitEnable": False, "daysLimitEnable": True, "timeLimit": [6, 7], "daysLimit": [0, 1],
    }  # fmt: skip
    # Seed 003's hours example, exactly: silent from 23:00 to 07:00 every day.
    daily = action_body("blink", FULL, ActionParams(message="Due", tel="1234", interval=60, time_limit=(23, 7)))
    assert {k: daily[k] for k in ("timeLimitEnable", "daysLimitEnable", "timeLimit", "daysLimit")} == {
        "timeLimitEnable": True, "daysLimitEnable": False, "timeLimit": [23, 7], "daysLimit": None,
    }  # fmt: skip
    json.dumps(span)  # tuples became JSON arrays


def test_actions_without_parameters_send_only_the_identifier():
    p = ActionParams(message="ignored", tel="1", interval=60, approve_id="X")
    for action in ("reject", "unlock", "stop-blink", "complete", "delete"):
        assert action_body(action, FULL, p) == {"objectId": FULL.object_id}


# --- ACTIONS: seed 003's life cycle -----------------------------------------------------------------------------


def test_each_action_is_allowed_from_the_seed_003_states():
    allowed = {name: spec.allowed_from for name, spec in ACTIONS.items()}
    assert allowed == {
        "approve": ("Pending",),
        "reject": ("Pending",),
        "lock": ("Enrolled",),
        "unlock": ("Enrolled", "Locked"),
        "blink": ("Enrolled",),
        "stop-blink": ("Blinked",),
        "message": ("Enrolled", "Locked", "Blinked"),
        "complete": ("Enrolled", "Locked", "Blinked"),
        "delete": ("Rejected", "Completed"),
    }
    becomes = {name: spec.becomes for name, spec in ACTIONS.items()}
    assert becomes == {
        "approve": "Accepted", "reject": "Rejected", "lock": "Locking", "unlock": "Unlocking",
        "blink": "StartingReminder", "stop-blink": "StoppingReminder", "message": None, "complete": "Completing",
        "delete": "",
    }  # fmt: skip


def test_endpoints_and_who_may_use_them():
    endpoints = {name: spec.endpoint for name, spec in ACTIONS.items()}
    assert endpoints["stop-blink"] == "unlock"  # no documented stop call: unlock ends a reminder
    assert endpoints["message"] == "sendMessage"
    assert {n for n, s in ACTIONS.items() if s.needs_control} == {"lock", "unlock", "complete", "delete"}
    assert {n for n, s in ACTIONS.items() if s.uses_message} == {"lock", "blink", "message"}


def test_devices_list_items_are_read_with_either_identifier_key():
    imei = parse_listed({"id": "OBJ1", "imei": "359221581300448", "approveId": "L-1", "state": "Enrolled"})
    serial = parse_listed({"id": "OBJ2", "serial": "R58N123ABCD", "approveId": None, "state": "Locked", "model": None})
    assert (imei.object_id, imei.device_uid, imei.approve_id, imei.state) == (
        "OBJ1",
        "359221581300448",
        "L-1",
        "Enrolled",
    )
    assert (serial.device_uid, serial.approve_id, serial.model) == ("R58N123ABCD", "", "")


# --- the client over the shared HTTP layer (network edge mocked) ------------------------------------------------


@pytest.fixture
def client(db, settings):
    settings.KNOX_SANDBOX_URL = BASE
    settings.KNOX_GUARD_RATE_LIMIT = 0
    account = KnoxAccount(name="Test", environment="sandbox")
    account.set_keys(parse_keys_json(keys_json()))
    account.set_secret("client_identifier", "CLIENT-IDENTIFIER")
    account.save()
    sleeps: list[float] = []
    return GuardClient(account, session=KnoxSession(account, sleep=sleeps.append)), sleeps


def calls_to(url: str) -> list:
    return [c for c in responses.calls if c.request.url == url]


@responses.activate
def test_async_results_list_the_failures_with_string_codes(client):
    guard, _ = client
    responses.post(TOKEN_URL, json={"accessToken": "t"})
    responses.post(
        f"{KG}/transaction",
        json={
            "count": 3, "success": 2, "fail": 1, "transactionId": "abc123",
            "resultList": [
                {"result": "SUCCESS", "requestedId": "359221581300448"},
                {"result": "FAIL", "requestedId": "T8F2Z455PD312NH5T1Q5Y9Y",
                 "error": {"code": "4000310", "message": "DEVICE_STATE_INVALID", "reason": "device is Locking"}},
            ],
        },
    )  # fmt: skip
    result = guard.result("abc123")
    assert (result.transaction_id, result.count, result.success, result.fail) == ("abc123", 3, 2, 1)
    assert result.failures == {"T8F2Z455PD312NH5T1Q5Y9Y": ("4000310", "DEVICE_STATE_INVALID", "device is Locking")}
    assert json.loads(calls_to(f"{KG}/transaction")[0].request.body) == {"transactionId": "abc123"}


@responses.activate
def test_async_results_tolerate_numeric_codes_and_missing_errors(client):
    guard, _ = client
    responses.post(TOKEN_URL, json={"accessToken": "t"})
    responses.post(
        f"{KG}/transaction",
        json={"count": "2", "success": 0, "fail": 2, "resultList": [
            {"result": "fail", "requestedId": "A", "error": {"code": 4040300, "message": "DEVICE_NOT_FOUND"}},
            {"result": "FAIL", "requestedId": "B"},
            "not an entry",
        ]},
    )  # fmt: skip
    result = guard.result("t1")
    assert result.count == 2
    assert result.failures == {"A": ("4040300", "DEVICE_NOT_FOUND", ""), "B": ("", "", "")}


@responses.activate
def test_a_429_on_an_async_request_is_retried_with_the_same_transaction_id(client):
    guard, sleeps = client
    responses.post(TOKEN_URL, json={"accessToken": "t"})
    busy = {"result": "FAIL", "error": {"code": "4290000", "message": "TOO_MANY_REQUESTS"}}
    responses.post(f"{KG}/devices/lockAsync", status=429, json=busy, headers={"Retry-After": "2"})
    responses.post(f"{KG}/devices/lockAsync", json={"result": "SUCCESS", "transactionId": "tx42"})
    p = ActionParams(message="Pay", tel="123")
    guard.act_async("lock", [(FULL, p), (DeviceRef(device_uid="359221581300455"), p)], transaction_id="tx42")
    sent = calls_to(f"{KG}/devices/lockAsync")
    assert len(sent) == 2 and sleeps and sleeps[0] >= 2  # Retry-After honoured
    assert {c.request.headers["x-knox-transactionId"] for c in sent} == {"tx42"}
    assert sent[0].request.body == sent[1].request.body  # the same request again: Knox keys it on the id
    # The synchronous body with deviceUid a list, as public clients send it (knox-api.md §7).
    assert json.loads(sent[1].request.body) == {
        "message": "Pay", "tel": "123", "deviceUid": [FULL.device_uid, "359221581300455"],
    }  # fmt: skip


def test_an_async_request_carries_one_set_of_parameters():
    from guard.client import async_body

    one = ActionParams(message="Pay", tel="123")
    other = ActionParams(message="Pay now", tel="123")
    with pytest.raises(ValueError, match="share its parameters"):
        async_body("lock", [(FULL, one), (DeviceRef(device_uid="359221581300455"), other)])
    approve = async_body("approve", [(FULL, ActionParams(approve_comment="KYC"))])
    assert approve == {"approveComment": "KYC", "deviceUid": [FULL.device_uid]}


@responses.activate
def test_a_429_on_a_single_lock_is_retried_because_knox_did_not_process_it(client):
    guard, _ = client
    responses.post(TOKEN_URL, json={"accessToken": "t"})
    responses.post(f"{KG}/devices/unlock", status=429, json={"result": "FAIL", "error": {"code": "4290000"}})
    responses.post(f"{KG}/devices/unlock", json={"result": "SUCCESS", "objectId": FULL.object_id})
    answer = guard.act("stop-blink", FULL, ActionParams(), transaction_id="tx7")
    assert answer["result"] == "SUCCESS"
    sent = calls_to(f"{KG}/devices/unlock")  # stop-blink goes to the unlock endpoint
    assert len(sent) == 2 and json.loads(sent[0].request.body) == {"objectId": FULL.object_id}


def test_async_requests_are_capped_and_validated_before_sending(client, monkeypatch):
    guard, _ = client
    monkeypatch.setattr("guard.client.KG_ASYNC_MAX_DEVICES", 2)
    p = ActionParams(message="Pay", tel="123")
    with pytest.raises(ValueError, match="at most 2 devices"):
        guard.act_async("lock", [(FULL, p)] * 3, transaction_id="t")
    with pytest.raises(GuardValidationError):
        guard.act_async("lock", [(FULL, ActionParams(message="Pay"))], transaction_id="t")
