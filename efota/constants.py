"""E-FOTA (b2bfota v2) values, documented (seed 004, knox-api.md §5) or assumed (§6). Each comment names its
evidence; portal/knox/evidence.py holds the same in code and tests/test_evidence.py checks it."""

from __future__ import annotations

# Seed 004 field limits, in UTF-8 bytes (not characters).
EFOTA_ID_MAX_BYTES = 50
EFOTA_LICENSE_MAX_BYTES = 100
# Samsung docs (knox-api.md §5.3): at most 100 serial numbers per call; larger lists are sent in several calls.
EFOTA_MAX_DEVICES_PER_CALL = 100
# §6 q23 (guess: seed 004 lists it as the fourth parameter error): FUD_1004 is the licence parameter error
# (missing or over 100 bytes).
EFOTA_FUD_PARAM_LICENSE = "FUD_1004"
# §6 q24 (Samsung docs' forceUpdate example): the only networkType value we know.
EFOTA_NETWORK_TYPES = ("WIFIONLY",)
# §6 q25 (Samsung docs say "11 digit"; seed 001's serial has letters): an 11-character alphanumeric serial.
EFOTA_SERIAL_LENGTH = 11
# targetFirmwareVersion may be "Latest" (Samsung docs, knox-api.md §5.4).
EFOTA_LATEST_FIRMWARE = "Latest"
# Guess (§6 q28): the root element of groupLicenseChange is not shown in the docs; named like the others.
EFOTA_GROUP_LICENSE_CHANGE_ROOT = "B2bGroupLicenseChangeVO"

# Portal-side limits, in characters (not shared with the sandbox): Samsung documents no length for forceUpdate's and
# firmwareList's deviceModelName, salesCode and firmware versions (knox-api.md §5.4 lists the fields only), so these
# are the widths of efota.models.ForceUpdate's columns; real values (SM-G991B, BTU, G991BXXU5CVDD) are far shorter.
# efota.client.check_device_fields checks them for the forms, efota.models.queue_force_update and the client.
EFOTA_MODEL_MAX_LENGTH = 40
EFOTA_SALES_CODE_MAX_LENGTH = 10
EFOTA_FIRMWARE_VERSION_MAX_LENGTH = 60

# FUD_3017..3022 are listed for groupRegister without meanings (seed 004; §6 q23). Our readings (guesses), which the
# sandbox also assumes (docs/sandbox.md "Assumptions"); FUD_9001/9003 are service errors, retried with back-off.
EFOTA_FUD_LICENSE_NOT_FOUND = "FUD_3017"
EFOTA_FUD_LICENSE_EXPIRED = "FUD_3018"
EFOTA_FUD_GROUP_OTHER_LICENSE = "FUD_3019"
EFOTA_FUD_NOT_FOUND = "FUD_3020"
EFOTA_FUD_LIMIT_EXCEEDED = "FUD_3021"
EFOTA_FUD_INVALID_REQUEST = "FUD_3022"
EFOTA_FUD_SERVICE_ERROR = "FUD_9001"
EFOTA_FUD_SERVICE_BUSY = "FUD_9003"

FUD_SENTENCES = {
    "FUD_1001": "The mdmId is missing or longer than 50 bytes; check the account's E-FOTA mdmId.",
    "FUD_1002": "The customer ID is missing or longer than 50 bytes.",
    "FUD_1003": "The group ID is missing or longer than 50 bytes.",
    EFOTA_FUD_PARAM_LICENSE: "The licence is missing or longer than 100 bytes.",
    EFOTA_FUD_LICENSE_NOT_FOUND: "E-FOTA does not know this licence for this mdmId and customer ID; check the licence key and the customer.",
    EFOTA_FUD_LICENSE_EXPIRED: "The licence is not active (expired or not yet activated); renew it or choose another licence.",
    EFOTA_FUD_GROUP_OTHER_LICENSE: "This group is already registered to another licence; use “Change licence” to move it.",
    EFOTA_FUD_NOT_FOUND: "E-FOTA does not know this group or force update ID.",
    EFOTA_FUD_LIMIT_EXCEEDED: "Too many devices: at most 100 per call, and no more than the licence allows.",
    EFOTA_FUD_INVALID_REQUEST: "E-FOTA refused the request as malformed (a serial number, network type or firmware version it does not accept).",
    EFOTA_FUD_SERVICE_ERROR: "E-FOTA had a service error; the portal retried and gave up, try again later.",
    EFOTA_FUD_SERVICE_BUSY: "E-FOTA is busy; the portal retried and gave up, try again later.",
}
