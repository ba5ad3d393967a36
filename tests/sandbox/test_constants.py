"""The sandbox's section-6 constants, literally as knox-api.md states them (the client declares the same)."""

from __future__ import annotations

from sandbox import constants as c


def test_section_6_values() -> None:
    assert c.KDP_MAX_DEVICES_PER_REQUEST == 1000
    assert (c.KDP_DEVICE_TYPE_IMEI, c.KDP_DEVICE_TYPE_SERIAL) == ("IMEI", "SN")
    assert (c.KDP_PROFILE_ALIAS_SERVICE_KEY, c.KDP_PROFILE_ALIAS_NAME_KEY, c.KDP_TARGET_SERVICE_KME) == (
        "service",
        "aliasName",
        "KME",
    )
    assert c.KDP_PROFILE_ALIAS_HEADERS == ("resellerId", "customerId")
    assert (c.KDP_ACCEPTED_STATE, c.KDP_SUCCESS_CODE) == ("Progress", 2000000)
    assert c.KDP_STATUS_QUERY_PARAMS == ("transactionId",)
    assert c.KDP_TERMINAL_STATES == ("Complete", "Rejected")
    assert c.KDP_POLL_TIMEOUT_SECONDS == 3600
    assert c.KDP_TRANSACTION_ID_MAX_LENGTH == 32
    assert c.KDP_PAGE_SIZE == 1000
    assert c.KDP_LIST_IMEI_KEYS == ("imei", "mei")
    assert c.KDP_MAX_REQUESTS_PER_SECOND == 10
    assert c.KDP_ERROR_HTTP_STATUS[40000044] == 400
    assert c.KDP_ERROR_HTTP_STATUS[4042104] == 404
    assert c.KNOX_ACCESS_TOKEN_VALIDITY_MINUTES == 30
    assert c.KG_AUTH_SCHEME == "apitoken"
    assert c.KG_ASYNC_MAX_DEVICES == 1000
    assert c.KG_MAX_PAGE_SIZE == 1000
    assert c.KG_TRANSACTION_ID_MAX_LENGTH == 32
    assert c.KG_MESSAGE_MAX_LENGTH == 200
    assert c.KG_CONTACT_REQUIRED is True
    assert c.KG_DEVICE_STATES[:4] == ("Pending", "Rejected", "Accepted", "Enrolled")
    assert len(c.KG_DEVICE_STATES) == 14
    assert c.KG_MAX_REQUESTS_PER_SECOND == 100
    assert c.EFOTA_FUD_PARAM_LICENSE == "FUD_1004"
    assert c.EFOTA_NETWORK_TYPES == ("WIFIONLY",)
    assert c.EFOTA_SERIAL_LENGTH == 11


def test_every_section_3_10_code_has_a_status() -> None:
    for code in (
        2000000,
        40000004,
        40000011,
        40000044,
        4012250,
        40300000,
        40400001,
        50000000,
        4002101,
        4042104,
        4092100,
    ):
        assert code in c.KDP_ERROR_HTTP_STATUS


def test_the_sandbox_imports_no_client_code() -> None:
    import ast
    from pathlib import Path

    root = Path(c.__file__).parent
    for path in root.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in {"portal", "kdp", "guard", "efota"}, f"{path} imports {name}"
