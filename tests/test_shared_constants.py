"""knox-api.md §6: every undocumented value lives in one named constant in the client and, with the same name
and value, in the sandbox. This is the one place that imports both sides."""

from __future__ import annotations

import os

import pytest

import sandbox.constants as sandbox_constants
from efota import constants as efota_constants
from guard import constants as guard_constants
from kdp import constants as kdp_constants
from portal.knox import auth as portal_auth

CLIENT_MODULES = [portal_auth, kdp_constants, guard_constants, efota_constants]
# The §6 rows each side must declare (by the client app that owns the service).
REQUIRED = {
    portal_auth: ["KNOX_ACCESS_TOKEN_VALIDITY_MINUTES"],
    kdp_constants: [
        "KDP_MAX_DEVICES_PER_REQUEST", "KDP_DEVICE_TYPE_IMEI", "KDP_DEVICE_TYPE_SERIAL", "KDP_PROFILE_ALIAS_SERVICE_KEY",
        "KDP_PROFILE_ALIAS_NAME_KEY", "KDP_TARGET_SERVICE_KME", "KDP_PROFILE_ALIAS_HEADERS", "KDP_ACCEPTED_STATE",
        "KDP_SUCCESS_CODE", "KDP_STATUS_QUERY_PARAMS", "KDP_TERMINAL_STATES", "KDP_POLL_TIMEOUT_SECONDS",
        "KDP_TRANSACTION_ID_MAX_LENGTH", "KDP_PAGE_SIZE", "KDP_LIST_IMEI_KEYS", "KDP_MAX_REQUESTS_PER_SECOND",
        "KDP_ERROR_HTTP_STATUS",
    ],
    guard_constants: [
        "KG_AUTH_SCHEME", "KG_ASYNC_MAX_DEVICES", "KG_MAX_PAGE_SIZE", "KG_TRANSACTION_ID_MAX_LENGTH",
        "KG_MESSAGE_MAX_LENGTH", "KG_CONTACT_REQUIRED", "KG_DEVICE_STATES", "KG_MAX_REQUESTS_PER_SECOND",
        "KG_BLINK_STOP_ACTION",
    ],
    efota_constants: [
        "EFOTA_FUD_PARAM_LICENSE", "EFOTA_NETWORK_TYPES", "EFOTA_SERIAL_LENGTH", "EFOTA_ID_MAX_BYTES",
        "EFOTA_LICENSE_MAX_BYTES", "EFOTA_MAX_DEVICES_PER_CALL", "EFOTA_GROUP_LICENSE_CHANGE_ROOT", "EFOTA_LATEST_FIRMWARE",
        "EFOTA_FUD_LICENSE_NOT_FOUND", "EFOTA_FUD_LICENSE_EXPIRED", "EFOTA_FUD_GROUP_OTHER_LICENSE", "EFOTA_FUD_NOT_FOUND",
        "EFOTA_FUD_LIMIT_EXCEEDED", "EFOTA_FUD_INVALID_REQUEST", "EFOTA_FUD_SERVICE_ERROR", "EFOTA_FUD_SERVICE_BUSY",
    ],
}  # fmt: skip
PAIRS = [(module, name) for module, names in REQUIRED.items() for name in names]


@pytest.mark.parametrize(("module", "name"), PAIRS, ids=[name for _, name in PAIRS])
def test_client_and_sandbox_agree(module, name):
    assert getattr(module, name) == getattr(sandbox_constants, name)


def test_every_other_shared_name_agrees_too():
    """A client constant the sandbox also declares must have the same value, listed above or not."""
    for module in CLIENT_MODULES:
        for name in dir(module):
            if name.isupper() and hasattr(sandbox_constants, name):
                assert getattr(module, name) == getattr(sandbox_constants, name), f"{module.__name__}.{name}"


@pytest.mark.skipif(
    bool({"KNOX_KDP_RATE_LIMIT", "KNOX_GUARD_RATE_LIMIT"} & set(os.environ)),
    reason="rate limits overridden by the environment",
)
def test_default_rate_limits_follow_the_constants():
    from portal import settings as portal_settings

    assert portal_settings.KNOX_KDP_RATE_LIMIT == kdp_constants.KDP_MAX_REQUESTS_PER_SECOND
    assert portal_settings.KNOX_GUARD_RATE_LIMIT == guard_constants.KG_MAX_REQUESTS_PER_SECOND
