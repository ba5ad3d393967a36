"""What each assumed Knox value rests on (knox-api.md section 6 and 7).

Why this exists: the client and the sandbox were both written from our own reference, so a test that makes them
hold the same value proves only that they agree, not that Knox does. Instead every value we could not read off a
Samsung page names its evidence here, and tests/test_evidence.py checks what is checkable without that page:
the constant exists in the client module that owns it, its evidence is named, the sandbox is strict only where
a seed is explicit, and every alternative form the evidence shows is accepted by the sandbox (or read by the
client) in a real request.

Evidence kinds, strongest first:
- "seed": one of the five Samsung pages the project started from (knox-api.md's header); `source` quotes it.
- "samsung docs": another public docs.samsungknox.com page (not a seed), named in knox-api.md.
- "public client": open-source code that calls the real API (knox-api.md section 7); `source` says which.
- "guess": no source gives the value; `source` says what little is known.

How the sandbox treats the value (`sandbox`):
- "strict": it refuses every other form. Allowed only for "seed" rows.
- "lenient": it accepts the value and every form in `alternatives`.
- "limit": it enforces the ceiling, so that the client is proven to split or pace under it. Real Knox may allow
  more (harmless) or less (its error would tell us); a guessed limit is marked "guess".
- "only form": no evidence shows another form, so it takes the one there is.
- "emits": the sandbox sends the value; the client reads it and every form in `alternatives`.
- "client only": a portal choice the sandbox never sees.

`open` names a known conflict the code does not follow yet (fixed elsewhere, or a follow-up).
"""

from __future__ import annotations

from dataclasses import dataclass

SEED = "seed"
SAMSUNG_DOCS = "samsung docs"
PUBLIC_CLIENT = "public client"
GUESS = "guess"
KINDS = (SEED, SAMSUNG_DOCS, PUBLIC_CLIENT, GUESS)
SANDBOX_TREATMENTS = ("strict", "lenient", "limit", "only form", "emits", "client only")

AUTH = "portal.knox.auth"
KDP = "kdp.constants"
GUARD = "guard.constants"
EFOTA = "efota.constants"


@dataclass(frozen=True)
class Evidence:
    module: str  # the client module that owns the constant
    ref: str  # where knox-api.md discusses it ("§6 q13")
    kind: str  # one of KINDS
    source: str  # one line: the seed quote, the public client, or why it is a guess
    sandbox: str  # one of SANDBOX_TREATMENTS
    alternatives: tuple[str, ...] = ()  # other forms the evidence shows, each checked in tests/test_evidence.py
    open: str = ""


_FUD_MEANINGS = (
    'seed 004 lists FUD_3017-3022 as "Processing Error" and FUD_9001/9003 as "Service Error" without meanings; '
    "the meaning is our reading. The client acts on the seed's category (permanent vs retried), not the meaning"
)


def _fud(ref: str = "§5.5, §6 q23") -> Evidence:
    return Evidence(EFOTA, ref, GUESS, _FUD_MEANINGS, "emits")


EVIDENCE: dict[str, Evidence] = {
    # --- authentication ------------------------------------------------------------------------------------------
    "KNOX_ACCESS_TOKEN_VALIDITY_MINUTES": Evidence(
        AUTH,
        "§6 q13",
        PUBLIC_CLIENT,
        "Samsung's Java token library (knox-token-client-library-4.0.jar) refuses more than 30 minutes and every "
        'public example sends 30; seeds 000 and 002: the token "expires every 30 minutes"',
        "lenient",
        alternatives=('the JSON string "30" (two public Java clients send it)', "no field at all"),
    ),
    "JWT_ALGORITHM": Evidence(
        AUTH,
        "§2.2, §6 q26",
        PUBLIC_CLIENT,
        "npm knox-token-library-js 1.0.22 (Samsung) signs RS512; Samsung's Java jar 4.0 signs RS256",
        "lenient",
        alternatives=("RS256 (the Java jar)", "RS384", "a jti of two hyphenated UUIDs (the npm library)"),
    ),
    # --- KDP -----------------------------------------------------------------------------------------------------
    "KDP_MAX_DEVICES_PER_REQUEST": Evidence(
        KDP,
        "§6 q1",
        GUESS,
        "nothing published for KDP; KG uploads take 10,000 (seed 003), Google's reseller library 100,000",
        "limit",
    ),
    "KDP_DEVICE_TYPE_IMEI": Evidence(KDP, "§6 q2", SEED, 'seed 001 V2 upload: "type": "IMEI"', "strict"),
    "KDP_DEVICE_TYPE_SERIAL": Evidence(
        KDP,
        "§6 q2",
        PUBLIC_CLIENT,
        'KDP Gen1 PHP client: devices.type "SN"; no Gen2 literal is published',
        "only form",
    ),
    "KDP_PROFILE_ALIAS_SERVICE_KEY": Evidence(
        KDP,
        "§6 q3",
        GUESS,
        'seed 002 adds ProfileAliasObject ("a Knox service for each profile alias name") but names no members',
        "only form",
    ),
    "KDP_PROFILE_ALIAS_NAME_KEY": Evidence(
        KDP, "§6 q3", GUESS, "seed 002 names ProfileAliasObject but not its members", "only form"
    ),
    "KDP_TARGET_SERVICE_KME": Evidence(
        KDP,
        "§6 q3",
        GUESS,
        'seed 002 names the targetService field and "Get KME Profile Aliases", not the literal value',
        "only form",
    ),
    "KDP_PROFILE_ALIAS_HEADERS": Evidence(
        KDP,
        "§6 q4",
        SEED,
        'seed 002 (July 2020): "The query parameters resellerId and customerId were moved to the header"',
        "strict",
    ),
    "KDP_ACCEPTED_STATE": Evidence(
        KDP,
        "§6 q5",
        PUBLIC_CLIENT,
        'KDP Gen1 PHP client reads {"state": "Progress", "code": 2000000}; Gen2\'s answer is undocumented, and '
        "the client relies only on the 2xx status",
        "emits",
    ),
    "KDP_SUCCESS_CODE": Evidence(
        KDP,
        "§6 q5",
        PUBLIC_CLIENT,
        'KDP Gen1 PHP client reads code 2000000; seed 001\'s V2 list answers "code": "2000000" (a string)',
        "emits",
    ),
    "KDP_STATUS_QUERY_PARAMS": Evidence(
        KDP,
        "§6 q6",
        PUBLIC_CLIENT,
        "KDP Gen1 PHP client queries the status by transactionId (with resellerId, vendorId); Gen2's are undocumented",
        "lenient",
        alternatives=("transactionId with resellerId (the Gen1 form)",),
    ),
    "KDP_TERMINAL_STATES": Evidence(
        KDP,
        "§6 q7",
        PUBLIC_CLIENT,
        'seed 001 shows "state": "Complete"; "Rejected" comes from the KDP Gen1 PHP client. The client keeps '
        "polling any other state",
        "emits",
    ),
    "KDP_POLL_TIMEOUT_SECONDS": Evidence(KDP, "§6 q7", GUESS, "no figure published; a portal choice", "client only"),
    "KDP_TRANSACTION_ID_MAX_LENGTH": Evidence(
        KDP,
        "§6 q8",
        GUESS,
        'seed 001\'s examples are numeric strings ("244303"); no length or charset is given. We send uuid4().hex',
        "limit",
        alternatives=('a numeric string, as seed 001 "244303"',),
    ),
    "KDP_PAGE_SIZE": Evidence(
        KDP,
        "§6 q9",
        GUESS,
        'seed 001\'s V2 list answers "pageNum": 0, "pageSize": 1000000; no maximum is stated',
        "lenient",
        alternatives=("pageSize 1000000, as seed 001's example answers",),
    ),
    "KDP_LIST_IMEI_KEYS": Evidence(
        KDP,
        "§6 q10",
        SEED,
        'seed 001 V2 list: "mei": "351826000675702" (V1: "imei"); a public Java client reads "mei" too',
        "emits",
        alternatives=('"imei" (the V1 key)',),
    ),
    "KDP_MAX_REQUESTS_PER_SECOND": Evidence(
        KDP, "§6 q11", GUESS, "no KDP figure; Knox Configure's docs give 10 requests/s per token", "limit"
    ),
    "KDP_ERROR_HTTP_STATUS": Evidence(
        KDP,
        "§6 q12",
        GUESS,
        "the troubleshooting page gives the Gen2 codes' statuses; 40000044, 4042104 and 4092100 have none, so "
        "their leading digits are used",
        "emits",
    ),
    # --- Knox Guard ----------------------------------------------------------------------------------------------
    "KG_AUTH_SCHEME": Evidence(
        GUARD, "§6 q15", SEED, 'seed 003: "x-knox-apitoken required" on every call; no kg OAuth scope exists', "strict"
    ),
    "KG_ASYNC_MAX_DEVICES": Evidence(
        GUARD,
        "§6 q17",
        GUESS,
        "4000316 DEVICE_BULK_OPERATION_LIMIT_EXCEEDED exists with no figure; the body follows the public PyKnox "
        'client ({"deviceUid": [...], ...})',
        "limit",
    ),
    "KG_MAX_PAGE_SIZE": Evidence(
        GUARD,
        "§6 q18",
        SEED,
        'seed 003 (upload listings): pageSize "must be >0 and ≤ 1000", default 1000; devices/list by analogy',
        "limit",
    ),
    "KG_TRANSACTION_ID_MAX_LENGTH": Evidence(
        GUARD,
        "§6 q19",
        GUESS,
        'seed 003: x-knox-transactionId is an "optional user generated unique alpha numeric code", no length; '
        'public Knox Guard clients send 32 hex (C#) or 12 ("M00118000001", PHP)',
        "limit",
        alternatives=("no header at all (it is optional) on a synchronous call",),
    ),
    "KG_MESSAGE_MAX_LENGTH": Evidence(
        GUARD,
        "§6 q20",
        SEED,
        'seed 003 (blink): message "Limit 200 characters"; applied to lock and sendMessage',
        "limit",
    ),
    "KG_CONTACT_REQUIRED": Evidence(
        GUARD,
        "§6 q20",
        SEED,
        'seed 003 (blink): "You must provide either a phone number or an email address"; applied to lock and '
        "sendMessage",
        "strict",
        alternatives=(
            "sendMessage without tel/email, as a public C# client sends it (the seed requires one for blink only)",
        ),
    ),
    "KG_DEVICE_STATES": Evidence(
        GUARD,
        "§6 q21",
        SEED,
        'seed 003 "State" column: Pending … Completed (console labels are a separate column)',
        "emits",
    ),
    "KG_MAX_REQUESTS_PER_SECOND": Evidence(
        GUARD, "§4.6", SEED, 'seed 003: "up to 100 times/second" per IP, user or API token, then 429', "limit"
    ),
    "KG_BLINK_STOP_ACTION": Evidence(
        GUARD,
        "§6 q27",
        GUESS,
        'no stop-reminder call is documented; seed 003 only names the state ("StoppingReminder")',
        "only form",
    ),
    "KG_UPLOAD_MAX_DEVICES": Evidence(
        GUARD, "§4.8", SEED, 'seed 003 devices/uploads: deviceList "List size min = 0, max = 10,000"', "limit"
    ),
    "KG_APPROVE_ID_MAX_LENGTH": Evidence(GUARD, "§4.8", SEED, 'seed 003 approve: approveId "(Limit 50)"', "limit"),
    "KG_APPROVE_COMMENT_MAX_LENGTH": Evidence(
        GUARD, "§4.8", SEED, 'seed 003 approve: approveComment "(Limit 1000)"', "limit"
    ),
    "KG_BLINK_INTERVAL_MIN": Evidence(GUARD, "§4.8", SEED, 'seed 003 blink: interval "[3 .. 86400]"', "limit"),
    "KG_BLINK_INTERVAL_MAX": Evidence(GUARD, "§4.8", SEED, 'seed 003 blink: interval "[3 .. 86400]"', "limit"),
    # --- E-FOTA --------------------------------------------------------------------------------------------------
    "EFOTA_ID_MAX_BYTES": Evidence(
        EFOTA, "§5.3", SEED, 'seed 004: mdmId, customerId, groupId "Max 50 byte string"', "limit"
    ),
    "EFOTA_LICENSE_MAX_BYTES": Evidence(EFOTA, "§5.3", SEED, 'seed 004: license "Max 100 byte string"', "limit"),
    "EFOTA_MAX_DEVICES_PER_CALL": Evidence(
        EFOTA,
        "§5.3",
        SAMSUNG_DOCS,
        "check-licenses-v2 and forceUpdate-v2 pages: at most 100 serial numbers a call",
        "limit",
    ),
    "EFOTA_FUD_PARAM_LICENSE": Evidence(
        EFOTA,
        "§6 q23",
        GUESS,
        'seed 004 lists FUD_1004 as the fourth "Parameter Error" without a meaning; license is the fourth parameter. '
        "The client treats every FUD_1xxx as a validation error",
        "emits",
    ),
    "EFOTA_NETWORK_TYPES": Evidence(
        EFOTA,
        "§6 q24",
        SAMSUNG_DOCS,
        "forceUpdate-v2 page's example networkType WIFIONLY; no list is published",
        "only form",
    ),
    "EFOTA_SERIAL_LENGTH": Evidence(
        EFOTA,
        "§6 q25",
        SAMSUNG_DOCS,
        'E-FOTA pages: "11 digit Samsung device serial number"; real serials have letters too (seed 001: '
        '"R3OOO00WKLD")',
        "lenient",
        alternatives=("letters as well as digits (seed 001's serial)", "digits only (the docs' words)"),
    ),
    "EFOTA_LATEST_FIRMWARE": Evidence(
        EFOTA, "§5.4", SAMSUNG_DOCS, 'forceUpdate-v2 page: targetFirmwareVersion may be "Latest"', "only form"
    ),
    "EFOTA_GROUP_LICENSE_CHANGE_ROOT": Evidence(
        EFOTA,
        "§6 q28",
        GUESS,
        "groupLicenseChange's body is not shown; named like the other roots (B2b…VO)",
        "only form",
    ),
    "EFOTA_FUD_LICENSE_NOT_FOUND": _fud(),
    "EFOTA_FUD_LICENSE_EXPIRED": _fud(),
    "EFOTA_FUD_GROUP_OTHER_LICENSE": _fud(),
    "EFOTA_FUD_NOT_FOUND": _fud(),
    "EFOTA_FUD_LIMIT_EXCEEDED": _fud(),
    "EFOTA_FUD_INVALID_REQUEST": _fud(),
    "EFOTA_FUD_SERVICE_ERROR": _fud(),
    "EFOTA_FUD_SERVICE_BUSY": _fud(),
}
