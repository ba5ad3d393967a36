"""The Knox HTTP layer with the network edge mocked (`responses`): token caching and renewal, retries, backoff,
Retry-After, idempotency rules, transaction ids, error parsing and logging without secrets."""

from __future__ import annotations

import json
import logging
from unittest import mock

import jwt
import pytest
import requests
import responses
from django.core.cache import cache

from portal.knox import errors
from portal.knox.auth import JWT_AUDIENCE, KNOX_TOKEN_REFRESH_AFTER_SECONDS, parse_keys_json
from portal.knox.http import KnoxSession, backoff_delay, retry_after_seconds
from portal.models import KnoxAccount
from tests.keys import keys_json, public_key

BASE = "http://knox.test"
TOKEN_URL = f"{BASE}/ams/v1/users/accesstoken"
CUSTOMERS_URL = f"{BASE}/kcs/v1/rp/customers"
LOCK_URL = f"{BASE}/kcs/v1.1/kg/devices/lock"
CLIENT_ID = "CLIENT-IDENTIFIER-SECRET-VALUE"


@pytest.fixture
def account(db, settings):
    settings.KNOX_SANDBOX_URL = BASE
    settings.KNOX_KDP_RATE_LIMIT = 0
    settings.KNOX_GUARD_RATE_LIMIT = 0
    settings.KNOX_MAX_RETRIES = 3
    a = KnoxAccount(name="Test", environment="sandbox", reseller_id="4600000925")
    a.set_keys(parse_keys_json(keys_json()))
    a.set_secret("client_identifier", CLIENT_ID)
    a.save()
    return a


class Sleeps(list):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def sleeps():
    return Sleeps()


def token_answers(*tokens: str) -> None:
    for t in tokens:
        responses.post(TOKEN_URL, json={"accessToken": t})


@responses.activate
def test_it_mints_once_and_reuses_the_signed_token(account, sleeps):
    token_answers("access-1")
    responses.get(CUSTOMERS_URL, json={"totalCount": 0, "customers": []})
    session = KnoxSession(account, sleep=sleeps)
    for _ in range(3):
        session.request("kdp", "GET", "/customers", idempotent=True)
    # A second session (as in another worker process) finds the token in the shared cache.
    KnoxSession(account).request("kdp", "GET", "/customers", idempotent=True)

    token_calls = [c for c in responses.calls if c.request.url == TOKEN_URL]
    assert len(token_calls) == 1
    body = json.loads(token_calls[0].request.body)
    assert body["base64EncodedStringPublicKey"] == account.public_key
    assert body["validityForAccessTokenInMinutes"] == 30
    cid = jwt.decode(body["clientIdentifierJwt"], public_key(), algorithms=["RS512"], audience=JWT_AUDIENCE)
    assert cid["clientIdentifier"] == CLIENT_ID

    api_tokens = {c.request.headers["x-knox-apitoken"] for c in responses.calls if c.request.url == CUSTOMERS_URL}
    assert len(api_tokens) == 1
    claims = jwt.decode(api_tokens.pop(), public_key(), algorithms=["RS512"], audience=JWT_AUDIENCE)
    assert claims["accessToken"] == "access-1"


@responses.activate
def test_cached_token_expires_before_knox_would_expire_it(account):
    token_answers("access-1")
    responses.get(CUSTOMERS_URL, json={})
    with mock.patch("portal.knox.auth.cache.set", wraps=cache.set) as cache_set:
        KnoxSession(account).request("kdp", "GET", "/customers", idempotent=True)
    (key, _value), kwargs = cache_set.call_args
    assert key.startswith("knox:token:apitoken:")
    assert kwargs["timeout"] == KNOX_TOKEN_REFRESH_AFTER_SECONDS <= 25 * 60


@responses.activate
def test_a_credentials_change_never_reuses_the_old_token(account):
    token_answers("access-1", "access-2")
    responses.get(CUSTOMERS_URL, json={})
    KnoxSession(account).request("kdp", "GET", "/customers", idempotent=True)
    account.set_secret("client_identifier", "a new one")
    account.save()
    KnoxSession(account).request("kdp", "GET", "/customers", idempotent=True)
    assert len([c for c in responses.calls if c.request.url == TOKEN_URL]) == 2


@responses.activate
def test_a_401_renews_the_token_once_and_retries_once(account, sleeps):
    token_answers("stale", "fresh")
    responses.get(CUSTOMERS_URL, status=401, json={"code": 4032251, "message": "ACCESS_TOKEN_EXPIRED"})
    responses.get(CUSTOMERS_URL, json={"totalCount": 2})
    r = KnoxSession(account, sleep=sleeps).request("kdp", "GET", "/customers", idempotent=True)
    assert r.json_object()["totalCount"] == 2
    service_calls = [c for c in responses.calls if c.request.url == CUSTOMERS_URL]
    assert len(service_calls) == 2
    tokens = [
        jwt.decode(c.request.headers["x-knox-apitoken"], public_key(), algorithms=["RS512"], audience=JWT_AUDIENCE)[
            "accessToken"
        ]
        for c in service_calls
    ]
    assert tokens == ["stale", "fresh"]


@responses.activate
def test_a_second_401_is_reported_not_retried_forever(account, sleeps):
    token_answers("t1", "t2", "t3")
    responses.get(
        CUSTOMERS_URL,
        status=401,
        json={"code": 4012250, "message": "ACCESS_TOKEN_BAD_REQUEST", "data": "ACCESS_TOKEN_BAD_REQUEST"},
    )
    with pytest.raises(errors.KnoxAuthError) as exc:
        KnoxSession(account, sleep=sleeps).request("kdp", "GET", "/customers", idempotent=True)
    assert exc.value.code == "4012250"
    assert "keys.json and Client Identifier" in exc.value.explain()
    assert len([c for c in responses.calls if c.request.url == CUSTOMERS_URL]) == 2


@responses.activate
def test_idempotent_calls_retry_5xx_with_backoff(account, sleeps):
    token_answers("t")
    responses.get(CUSTOMERS_URL, status=503)
    responses.get(CUSTOMERS_URL, status=502)
    responses.get(CUSTOMERS_URL, json={"ok": True})
    r = KnoxSession(account, sleep=sleeps).request("kdp", "GET", "/customers", idempotent=True)
    assert r.json_object() == {"ok": True} and r.attempts == 3
    assert len(sleeps) == 2


@responses.activate
def test_retries_are_bounded(account, sleeps, settings):
    settings.KNOX_MAX_RETRIES = 2
    token_answers("t")
    responses.get(CUSTOMERS_URL, status=503, json={"code": 50000000, "message": "INTERNAL_SERVER_ERROR"})
    with pytest.raises(errors.KnoxServerError):
        KnoxSession(account, sleep=sleeps).request("kdp", "GET", "/customers", idempotent=True)
    assert len([c for c in responses.calls if c.request.url == CUSTOMERS_URL]) == 3


@responses.activate
def test_429_honours_retry_after_and_does_not_use_up_retries(account, sleeps, settings):
    settings.KNOX_MAX_RETRIES = 0
    token_answers("t")
    responses.get(CUSTOMERS_URL, status=429, headers={"Retry-After": "3"})
    responses.get(CUSTOMERS_URL, status=429, headers={"Retry-After": "1"})
    responses.get(CUSTOMERS_URL, json={})
    KnoxSession(account, sleep=sleeps).request("kdp", "GET", "/customers", idempotent=True)
    assert sleeps[0] >= 3 and sleeps[1] >= 1


@responses.activate
def test_429_is_bounded_too(account, sleeps, settings):
    settings.KNOX_MAX_RATE_LIMITED_RETRIES = 3
    token_answers("t")
    responses.get(CUSTOMERS_URL, status=429)
    with pytest.raises(errors.KnoxRateLimited):
        KnoxSession(account, sleep=sleeps).request("kdp", "GET", "/customers", idempotent=True)
    assert len([c for c in responses.calls if c.request.url == CUSTOMERS_URL]) == 4


@responses.activate
def test_a_non_idempotent_call_is_not_repeated_after_a_5xx(account, sleeps):
    token_answers("t")
    responses.post(LOCK_URL, status=503)
    with pytest.raises(errors.KnoxOutcomeUnknown, match="not repeated blindly"):
        KnoxSession(account, sleep=sleeps).request(
            "guard", "POST", "/devices/lock", json={"deviceUid": "1"}, idempotent=False
        )
    assert len([c for c in responses.calls if c.request.url == LOCK_URL]) == 1


@responses.activate
def test_a_non_idempotent_call_is_repeated_after_a_429(account, sleeps):
    token_answers("t")
    responses.post(
        LOCK_URL, status=429, json={"result": "FAIL", "error": {"code": 429, "message": "Too Many Requests"}}
    )
    responses.post(LOCK_URL, json={"result": "SUCCESS", "objectId": "X"})
    r = KnoxSession(account, sleep=sleeps).request(
        "guard", "POST", "/devices/lock", json={"deviceUid": "1"}, idempotent=False
    )
    assert r.json_object()["result"] == "SUCCESS"


@responses.activate
def test_connection_errors_retry_idempotent_calls_then_report_unavailable(account, sleeps, settings):
    settings.KNOX_MAX_RETRIES = 2
    token_answers("t")
    responses.get(CUSTOMERS_URL, body=requests.ConnectionError("Connection reset by peer"))
    with pytest.raises(errors.KnoxUnavailable) as exc:
        KnoxSession(account, sleep=sleeps).request("kdp", "GET", "/customers", idempotent=True)
    assert not isinstance(exc.value, errors.KnoxOutcomeUnknown)
    assert len([c for c in responses.calls if c.request.url == CUSTOMERS_URL]) == 3


@responses.activate
def test_never_sent_only_when_no_attempt_could_have_reached_knox(account, sleeps, settings):
    """portal.engine sends a request again at once when its connection was never made: a reset on an earlier
    attempt (the PUT may have arrived) followed by refused connections is not "never sent"."""
    settings.KNOX_MAX_RETRIES = 2
    token_answers("t")
    refused = requests.ConnectionError("NewConnectionError: [Errno 111] Connection refused")
    url = CUSTOMERS_URL
    responses.get(url, body=refused)
    with pytest.raises(errors.KnoxUnavailable) as exc:
        KnoxSession(account, sleep=sleeps).request("kdp", "GET", "/customers", idempotent=True)
    assert exc.value.never_sent
    responses.reset()
    token_answers("t")
    responses.get(url, body=requests.ConnectionError("Connection reset by peer"))
    responses.get(url, body=refused)
    responses.get(url, body=refused)
    with pytest.raises(errors.KnoxUnavailable) as exc:
        KnoxSession(account, sleep=sleeps).request("kdp", "GET", "/customers", idempotent=True)
    assert not exc.value.never_sent


@responses.activate
def test_a_reset_after_sending_a_non_idempotent_call_is_outcome_unknown(account, sleeps):
    token_answers("t")
    responses.post(LOCK_URL, body=requests.ConnectionError("Connection reset by peer"))
    with pytest.raises(errors.KnoxOutcomeUnknown):
        KnoxSession(account, sleep=sleeps).request("guard", "POST", "/devices/lock", json={}, idempotent=False)
    assert len([c for c in responses.calls if c.request.url == LOCK_URL]) == 1


@responses.activate
def test_knox_guard_calls_carry_a_transaction_id_kept_across_retries_and_only_they(account, sleeps):
    """x-knox-transactionId is a Knox Guard header (seed 003): KDP keeps its transactionId in the body, and
    neither E-FOTA nor the token calls document one."""
    token_answers("t")
    responses.post(LOCK_URL, status=429)
    responses.post(LOCK_URL, json={"result": "SUCCESS"})
    responses.get(CUSTOMERS_URL, status=503)
    responses.get(CUSTOMERS_URL, json={})
    responses.put(f"{BASE}/kcs/v1/rp/devices/upload", json={})
    session = KnoxSession(account, sleep=sleeps)
    session.request("guard", "POST", "/devices/lock", json={}, idempotent=False)
    session.request("guard", "POST", "/devices/lock", json={}, idempotent=False, transaction_id="abc123")
    session.request("kdp", "GET", "/customers", idempotent=True)
    session.request("kdp", "PUT", "/devices/upload", json={}, idempotent=True, transaction_id="abc123")
    lock_ids = [c.request.headers.get("x-knox-transactionId") for c in responses.calls if c.request.url == LOCK_URL]
    assert len(lock_ids) == 3 and lock_ids[0] == lock_ids[1] and len(lock_ids[0]) == 32  # kept across the 429
    assert lock_ids[2] == "abc123"
    others = [c for c in responses.calls if c.request.url != LOCK_URL]
    assert others and not any("x-knox-transactionId" in c.request.headers for c in others)


@responses.activate
def test_an_html_answer_is_retried_then_a_bad_response_not_a_crash(account, sleeps):
    token_answers("t")
    for _ in range(4):
        responses.get(CUSTOMERS_URL, body="<html><body>Bad gateway</body></html>", content_type="text/html")
    with pytest.raises(errors.KnoxBadResponse, match=r"web page \(HTML\).*4 attempts"):
        KnoxSession(account, sleep=sleeps).request("kdp", "GET", "/customers", idempotent=True)
    assert len(sleeps) == 3  # KNOX_MAX_RETRIES


@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        ("<!DOCTYPE html><p>maintenance</p>", "text/plain", "web page"),
        ('{"totalCount": 1, "custo', "application/json", "JSON that is cut off"),
        (
            '<?xml version="1.0"?><!DOCTYPE z [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]><z>&b;</z>',
            "application/xml",
            "declares entities",
        ),
        ("<B2bResult><resultCode>0", "application/xml", "cut off"),
    ],
)
@responses.activate
def test_undocumented_2xx_bodies_are_retried_and_a_good_answer_wins(account, sleeps, body, content_type, message):
    token_answers("t")
    responses.get(CUSTOMERS_URL, body=body, content_type=content_type)
    responses.get(CUSTOMERS_URL, json={"totalCount": 0, "customers": []})
    r = KnoxSession(account, sleep=sleeps).request("kdp", "GET", "/customers", idempotent=True)
    assert r.json_object() == {"totalCount": 0, "customers": []} and r.attempts == 2 and len(sleeps) == 1
    with pytest.raises(errors.KnoxBadResponse, match=message):
        from portal.knox.http import decode_body

        decode_body(body.encode(), content_type)


@responses.activate
def test_an_undocumented_answer_to_a_guard_action_is_outcome_unknown_not_repeated(account, sleeps):
    token_answers("t")
    responses.post(LOCK_URL, body="<html>Service maintenance</html>", content_type="text/html")
    with pytest.raises(errors.KnoxOutcomeUnknown, match="not repeated blindly"):
        KnoxSession(account, sleep=sleeps).request("guard", "POST", "/devices/lock", json={}, idempotent=False)
    assert len(responses.calls) == 2 and sleeps == []  # the token, then one lock attempt


def test_nothing_is_sent_when_credentials_are_missing(db, settings):
    settings.KNOX_SANDBOX_URL = BASE
    account = KnoxAccount.objects.create(name="Empty", environment="sandbox")
    with responses.RequestsMock() as rsps, pytest.raises(errors.KnoxNotConfigured, match=r"keys\.json"):
        KnoxSession(account).request("guard", "GET", "/authorization", idempotent=True)
    assert len(rsps.calls) == 0


@responses.activate
def test_oauth_accounts_send_a_bearer_token(account):
    account.auth_mode = KnoxAccount.AuthMode.OAUTH
    account.oauth_client_id = "client-1"
    account.set_secret("oauth_client_secret", "oauth-secret-value")
    account.save()
    responses.post(
        f"{BASE}/ams/v1/oauth2/token", json={"access_token": "bearer-1", "expires_in": 599, "token_type": "Bearer"}
    )
    responses.get(CUSTOMERS_URL, json={})
    session = KnoxSession(account)
    session.request("kdp", "GET", "/customers", idempotent=True)
    session.request("kdp", "GET", "/customers", idempotent=True)
    form = responses.calls[0].request.body
    assert "grant_type=client_credentials" in form and "client_id=client-1" in form
    assert [c.request.headers.get("Authorization") for c in responses.calls[1:]] == ["Bearer bearer-1"] * 2


@responses.activate
def test_gen1_accounts_send_the_static_key(account):
    account.kdp_generation = KnoxAccount.Generation.GEN1
    account.auth_mode = KnoxAccount.AuthMode.GEN1_KEY
    account.set_secret("gen1_api_key", "gen1-static-key")
    account.save()
    responses.post(f"{BASE}/bulkenroll/v1/reseller/customers", json=[])
    KnoxSession(account).request("kdp_gen1", "POST", "/bulkenroll/v1/reseller/customers", json={}, idempotent=True)
    assert responses.calls[0].request.headers["X-WSM-API-TOKEN"] == "gen1-static-key"
    with pytest.raises(errors.KnoxNotConfigured, match="Gen1"):
        KnoxSession(account).request("kdp", "GET", "/customers", idempotent=True)


@responses.activate
def test_logs_name_the_call_but_never_a_secret(account, sleeps, caplog):
    token_answers("the-access-token")
    responses.get(CUSTOMERS_URL, status=503)
    responses.get(CUSTOMERS_URL, json={})
    with caplog.at_level(logging.DEBUG):
        KnoxSession(account, sleep=sleeps).request("kdp", "GET", "/customers", idempotent=True)
    text = caplog.text
    assert "GET /customers" in text and "status=503" in text and "status=200" in text and "txn=" in text
    for secret in (CLIENT_ID, "the-access-token", account.secret("private_key")[:40], "x-knox-apitoken"):
        assert secret not in text


@pytest.mark.parametrize(
    ("status", "body", "code", "cls"),
    [
        (
            400,
            b'{"errorId":"e1","code":40000011,"message":"CUSTOMER_ID_INVALID","data":"bad customer"}',
            "40000011",
            errors.KnoxError,
        ),
        (
            400,
            b'{"result":"FAIL","error":{"code":"4000310","message":"DEVICE_STATE_INVALID","reason":"Locked"}}',
            "4000310",
            errors.KnoxError,
        ),
        (
            401,
            b'{"result":"FAIL","error":{"code":4010000,"message":"AUTHORIZATION_FAIL","reason":"Invalid Api Key"}}',
            "4010000",
            errors.KnoxAuthError,
        ),
        (401, b'{"error":"invalid_client","error_description":"bad secret"}', "invalid_client", errors.KnoxAuthError),
        (
            400,
            b"<error><code>FUD_1001</code><message/><resource>com.samsung.X</resource></error>",
            "FUD_1001",
            errors.KnoxError,
        ),
        (500, b"<html><h1>500</h1></html>", "", errors.KnoxServerError),
        (502, b'{"code": 12', "", errors.KnoxServerError),
        (429, b"", "", errors.KnoxRateLimited),
    ],
)
def test_error_bodies_become_typed_exceptions(status, body, code, cls):
    err = errors.error_from_response(status, body, service="kdp")
    assert type(err) is cls
    assert err.code == code and err.status == status
    assert err.explain()


def test_hostile_xml_is_not_expanded():
    bomb = b'<?xml version="1.0"?><!DOCTYPE e [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]><error><code>&b;</code></error>'
    err = errors.error_from_response(400, bomb, service="efota")
    assert err.code == ""


def test_unknown_codes_are_shown_verbatim():
    err = errors.error_from_response(400, b'{"code": 4999999, "message": "SOMETHING_NEW", "data": "detail"}')
    assert "4999999" in str(err) and "SOMETHING_NEW" in str(err)
    assert errors.explain("FUD_3019").startswith("E-FOTA could not process")


def test_retry_after_parsing_and_backoff_bounds(settings):
    settings.KNOX_BACKOFF_BASE = 0.5
    settings.KNOX_BACKOFF_MAX = 8
    assert retry_after_seconds("5") == 5 and retry_after_seconds(None) is None and retry_after_seconds("soon") is None
    assert 0 <= retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0
    for attempt in range(1, 10):
        assert 0 <= backoff_delay(attempt) <= 8
    assert backoff_delay(1, retry_after=5) >= 5
    assert backoff_delay(1, retry_after=600) == 8
