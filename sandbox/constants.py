"""Every value the sandbox assumes about Knox.

Two kinds of constants live here:

1. The undocumented values of knox-api.md section 6, under the names used there. The sandbox never imports the
   client's code and no test makes the two hold equal values: each follows the documented assumption on its own.
   Where the evidence conflicts or is only a guess, the sandbox is lenient (it accepts every plausible form) and
   it is strict only where a seed is explicit (knox-api.md section 6 "Rule for every row"; the known exceptions
   are the `open` notes of portal/knox/evidence.py).
2. The sandbox's own assumptions (error codes Knox does not document for a situation, response members nobody
   has published). Each one is listed, with its reasoning, in the "Assumptions" table of docs/sandbox.md.

When Samsung documents a real value, change it here, in the client, and in knox-api.md section 6.
"""

from __future__ import annotations

# ---------------------------------------------------------------------------------------------------------------
# 1. knox-api.md section 6 (row number in brackets)
# ---------------------------------------------------------------------------------------------------------------

# [1] Larger KDP uploads/deletes are refused with 400 / 4000000 RESOURCE_INVALID_PARAM.
KDP_MAX_DEVICES_PER_REQUEST = 1000
# [2] Gen2 `type` literals. There are no MEID uploads.
KDP_DEVICE_TYPE_IMEI = "IMEI"
KDP_DEVICE_TYPE_SERIAL = "SN"
# [3] ProfileAliasObject members and the only target service we know.
KDP_PROFILE_ALIAS_SERVICE_KEY = "service"
KDP_PROFILE_ALIAS_NAME_KEY = "aliasName"
KDP_TARGET_SERVICE_KME = "KME"
# [4] Since July 2020 the profile alias call takes these two as request headers.
KDP_PROFILE_ALIAS_HEADERS = ("resellerId", "customerId")
# [5] The immediate answer to an accepted upload/delete.
KDP_ACCEPTED_STATE = "Progress"
KDP_SUCCESS_CODE = 2000000
# [6] Query parameters of GET /kcs/v1/rp/devices/status.
KDP_STATUS_QUERY_PARAMS = ("transactionId",)
# [7] Transaction states after which nothing changes any more.
KDP_TERMINAL_STATES = ("Complete", "Rejected")
KDP_POLL_TIMEOUT_SECONDS = 3600
# [8] Longest transactionId the sandbox accepts (the client sends uuid4().hex, 32 characters).
KDP_TRANSACTION_ID_MAX_LENGTH = 32
# [9] Largest (and default) page of GET /kcs/v1/rp/devices; paging parameters pageNum/pageSize.
KDP_PAGE_SIZE = 1000
# The largest pageSize the sandbox answers: seed 001's V2 list example answers "pageSize": 1000000, so nothing
# up to that is refused (lenient: no maximum is documented).
KDP_PAGE_SIZE_ACCEPTED = 1_000_000
# [10] The list-devices IMEI key: the sandbox emits `mei`, as seed 001 shows.
KDP_LIST_IMEI_KEYS = ("imei", "mei")
# [11] KDP requests per second per token (the Knox Configure figure).
KDP_MAX_REQUESTS_PER_SECOND = 10
# [12] HTTP status of every KDP code of knox-api.md section 3.10. Where the docs give no status the leading digits
# of the code are used (Knox codes start with their HTTP status: 4092100 -> 409, 2000000 -> 200).
KDP_ERROR_HTTP_STATUS = {
    2000000: 200,
    40000004: 400,
    40000011: 400,
    40000044: 400,
    4012250: 401,
    40300000: 403,
    40400001: 404,
    50000000: 500,
    4002101: 400,
    4042104: 404,
    4092100: 409,
}
# [13] Largest validityForAccessTokenInMinutes; above it the sandbox answers 4002251.
KNOX_ACCESS_TOKEN_VALIDITY_MINUTES = 30
# [15] Knox Guard only takes the signed x-knox-apitoken (there is no `kg` OAuth scope).
KG_AUTH_SCHEME = "apitoken"
# [17] Devices per *Async request (body {"deviceList": [<sync body>, ...]}); more -> 4000316.
KG_ASYNC_MAX_DEVICES = 1000
# [18] Largest pageSize of POST devices/list (and of the uploads listings).
KG_MAX_PAGE_SIZE = 1000
# [19] x-knox-transactionId: at most 32 characters of [A-Za-z0-9].
KG_TRANSACTION_ID_MAX_LENGTH = 32
# [20] Message limit and contact rule, applied to blink, lock and sendMessage.
KG_MESSAGE_MAX_LENGTH = 200
KG_CONTACT_REQUIRED = True
# [21] The API spells states as the seed's "State" column, in the seed's order.
KG_DEVICE_STATES = (
    "Pending",
    "Rejected",
    "Accepted",
    "Enrolled",
    "Exchanging",
    "Resetting",
    "StartingReminder",
    "StoppingReminder",
    "Blinked",
    "Locking",
    "Locked",
    "Unlocking",
    "Completing",
    "Completed",
)
# knox-api.md section 4.6 (documented, not an open question, but the client paces on it).
KG_MAX_REQUESTS_PER_SECOND = 100
# [23] FUD_1004 is the licence parameter error.
EFOTA_FUD_PARAM_LICENSE = "FUD_1004"
# [24] The only networkType value we know.
EFOTA_NETWORK_TYPES = ("WIFIONLY",)
# [25] Serial numbers are 11 alphanumeric characters.
EFOTA_SERIAL_LENGTH = 11

# ---------------------------------------------------------------------------------------------------------------
# 2. Documented values the sandbox relies on (knox-api.md sections 2-5)
# ---------------------------------------------------------------------------------------------------------------

KNOX_JWT_AUDIENCE = "KnoxWSM"
KNOX_JWT_ALGORITHMS = ("RS256", "RS384", "RS512")
OAUTH_DEFAULT_EXPIRES_IN = 599
OAUTH_MAX_EXPIRES_IN = 3600
OAUTH_KDP_SCOPES = ("kdp", "kdp.devices", "kdp.devices:view", "kdp.devices:manage", "kdp.profilealias", "kdp.customers")
KG_UPLOAD_MAX_DEVICES = 10_000
KG_APPROVE_ID_MAX_LENGTH = 50
KG_APPROVE_COMMENT_MAX_LENGTH = 1000
KG_BLINK_INTERVAL_MIN = 3
KG_BLINK_INTERVAL_MAX = 86_400
EFOTA_TOKEN_LIFETIME_SECONDS = 3600
EFOTA_ID_MAX_BYTES = 50
EFOTA_LICENSE_MAX_BYTES = 100
EFOTA_MAX_DEVICES_PER_CALL = 100
EFOTA_FUD_PARAM_MDM_ID = "FUD_1001"
EFOTA_FUD_PARAM_CUSTOMER_ID = "FUD_1002"
EFOTA_FUD_PARAM_GROUP_ID = "FUD_1003"
EFOTA_ERROR_RESOURCE = "com.samsung.efota.mdm.service.v2.MDMDeviceServiceResourceImpl"

# Error codes as (code, message) pairs.
AMS_INVALID_PARAM = (4000000, "RESOURCE_INVALID_PARAM")
AMS_NON_UNIQUE_JWT_ID = (4002250, "API_KEY_NON_UNIQUE_JWTID")
AMS_VALIDITY_INVALID = (4002251, "ACCESS_TOKEN_TIMEOUT_VALIDITY_RESOURCE_INVALID_PARAM")
AMS_ACCESS_TOKEN_BAD_REQUEST = (4012250, "ACCESS_TOKEN_BAD_REQUEST")
AMS_ACCESS_TOKEN_EXPIRED = (4032251, "ACCESS_TOKEN_EXPIRED")
AMS_AUTHENTICATION_FAIL = (4030000, "AUTHENTICATION_FAIL")

KDP_INVALID_PARAM = (4000000, "RESOURCE_INVALID_PARAM")
KDP_DEVICE_INVALID = (40000004, "DEVICE_INVALID")
KDP_CUSTOMER_ID_INVALID = (40000011, "CUSTOMER_ID_INVALID")
KDP_RESELLER_CUSTOMER_DEVICE_NOT_FOUND = (40000044, "RESELLER_CUSTOMER_DEVICE_NOT_FOUND")
KDP_AUTHORIZATION_FAIL = (40300000, "AUTHORIZATION_FAIL")
KDP_RESELLER_NOT_FOUND = (40400001, "RESELLER_NOT_FOUND")
KDP_INTERNAL_SERVER_ERROR = (50000000, "INTERNAL_SERVER_ERROR")
KDP_GEN1_RESELLER_ID_MISSING = (4002101, "RESELLER_ID_MISSING")
KDP_GEN1_CUSTOMER_NOT_FOUND = (4042104, "CUSTOMER_NOT_FOUND")
KDP_RESELLER_DEVICE_ALREADY_EXISTS = (4092100, "RESELLER_DEVICE_ALREADY_EXISTS")
KDP_DEVICE_INVALID_DATA = "The specified device is not valid."

KG_INVALID_PARAM = (4000000, "RESOURCE_INVALID_PARAM")
KG_AUTHORIZATION_FAIL = (4010000, "AUTHORIZATION_FAIL")
KG_DEVICE_NOT_FOUND = (4040300, "DEVICE_NOT_FOUND")
KG_DEVICE_STATE_INVALID = (4000310, "DEVICE_STATE_INVALID")
KG_BULK_LIMIT_EXCEEDED = (4000316, "DEVICE_BULK_OPERATION_LIMIT_EXCEEDED")

# ---------------------------------------------------------------------------------------------------------------
# 3. The sandbox's own assumptions (see docs/sandbox.md, "Assumptions")
# ---------------------------------------------------------------------------------------------------------------

# A device already registered to another reseller, or by this reseller to another customer, fails per device with
# the one documented "already exists" code (seed 001 shows it in a status body).
KDP_DEVICE_OWNED_ELSEWHERE = KDP_RESELLER_DEVICE_ALREADY_EXISTS
# Re-uploading a device this reseller already registered to the *same* customer is a successful no-op (it is
# still counted in counters.duplicate_device_submissions when it comes from another transaction).
KDP_REUPLOAD_SAME_CUSTOMER_SUCCEEDS = True
# The same device twice in one request: every occurrence fails with DEVICE_INVALID and nothing is registered, so
# the status and the registry never disagree about it.
KDP_DUPLICATE_IN_REQUEST = KDP_DEVICE_INVALID
# An upload naming a profile alias the customer does not have fails per device with RESOURCE_INVALID_PARAM.
KDP_UNKNOWN_PROFILE_ALIAS = KDP_INVALID_PARAM
# A customer still pending verification refuses uploads as a whole with CUSTOMER_ID_INVALID (HTTP 400).
KDP_PENDING_CUSTOMER = KDP_CUSTOMER_ID_INVALID
KDP_CUSTOMER_STATUS_VERIFIED = "Verified"
KDP_CUSTOMER_STATUS_PENDING = "Pending"
# The one device state list-devices shows (seed 001).
KDP_DEVICE_STATE_VERIFIED = "Verified"
# Gen2 paths called with a Gen1 key, Gen1 paths called by a Gen2 account, or a resellerId of the other generation.
KDP_WRONG_GENERATION = KDP_AUTHORIZATION_FAIL
# A bad or missing X-WSM-API-TOKEN (no Gen1 auth code is published): 401 with the Guard/AMS "AUTHORIZATION_FAIL".
KDP_GEN1_INVALID_KEY = (4010000, "AUTHORIZATION_FAIL")
# Gen1 has no published code for an invalid device; it reuses the Gen2 one.
KDP_GEN1_DEVICE_INVALID = KDP_DEVICE_INVALID
# OAuth scopes each KDP Gen2 call needs (any one of them).
KDP_SCOPES_MANAGE = ("kdp", "kdp.devices", "kdp.devices:manage")
KDP_SCOPES_VIEW = ("kdp", "kdp.devices", "kdp.devices:view")
KDP_SCOPES_CUSTOMERS = ("kdp", "kdp.customers")
KDP_SCOPES_PROFILE_ALIAS = ("kdp", "kdp.profilealias")
# Serial numbers: 11 upper-case alphanumerics, like the seed's "R3OOO00WKLD".
KDP_SERIAL_PATTERN = r"[0-9A-Z]{11}"
# Rate-limit bodies (no code is published, only the 429 status).
KDP_TOO_MANY_REQUESTS = (4290000, "TOO_MANY_REQUESTS")
KG_TOO_MANY_REQUESTS = (4290000, "TOO_MANY_REQUESTS")
# Fault-injected 5xx bodies.
KG_INTERNAL_SERVER_ERROR = (5000000, "INTERNAL_SERVER_ERROR")
KDP_SERVICE_UNAVAILABLE = (50300000, "SERVICE_UNAVAILABLE")
KG_SERVICE_UNAVAILABLE = (5030000, "SERVICE_UNAVAILABLE")
# An expired clientIdentifier/x-knox-apitoken *JWT* (its `exp`): the 4030000 "Failed to parse jwt token ... has
# expired" answer of Knox KBA-1242. An expired *access token* inside a valid JWT is 4032251.
KNOX_JWT_EXPIRED = AMS_AUTHENTICATION_FAIL
# Knox Guard answers every authentication failure (missing, bad, expired) with 401 / 4010000 (its docs: "401
# missing or expired token").
KG_AUTH_FAILURE_STATUS = 401
# Unknown async transactionId / uploadId and a re-used x-knox-transactionId: RESOURCE_INVALID_PARAM, HTTP 400.
KG_UNKNOWN_TRANSACTION = KG_INVALID_PARAM
KG_UNKNOWN_UPLOAD = KG_INVALID_PARAM
# The async result lists failed devices only, as the documented example (count 3, one FAIL entry) does.
KG_TRANSACTION_RESULTS_FAILED_ONLY = True
# There is no documented "stop blinking" call: `unlock` on a Blinked device stops the reminder.
KG_BLINK_STOP_ACTION = "unlock"
KG_LOCKABLE_STATES = ("Enrolled",)
KG_BLINKABLE_STATES = ("Enrolled",)
KG_MESSAGE_STATES = ("Enrolled", "Locked", "Blinked")
KG_COMPLETABLE_STATES = ("Enrolled", "Locked", "Blinked")
KG_DELETABLE_STATES = ("Rejected", "Completed")
# Transitional state -> the state it settles in after the process delay.
KG_SETTLES_TO = {
    "Accepted": "Enrolled",
    "Locking": "Locked",
    "Unlocking": "Enrolled",
    "StartingReminder": "Blinked",
    "StoppingReminder": "Enrolled",
    "Completing": "Completed",
}
KG_OBJECT_ID_LENGTH = 23
KG_SERIAL_PATTERN = r"[0-9A-Z]{8,20}"
KG_UPLOAD_STATUS_PROGRESS = "Progress"
KG_UPLOAD_STATUS_COMPLETE = "Complete"
# E-FOTA processing codes (listed for groupRegister without meanings; these are our readings).
EFOTA_FUD_LICENSE_NOT_FOUND = "FUD_3017"  # unknown licence, or not this mdmId/customerId's
EFOTA_FUD_LICENSE_EXPIRED = "FUD_3018"  # licence not active (also seen in a licenseInfo example)
EFOTA_FUD_GROUP_OTHER_LICENSE = "FUD_3019"  # group already registered to another licence
EFOTA_FUD_NOT_FOUND = "FUD_3020"  # unknown groupId (licence change) or forceUpdateId
EFOTA_FUD_LIMIT_EXCEEDED = "FUD_3021"  # over 100 serials per call, or over the licence's device count
EFOTA_FUD_INVALID_REQUEST = "FUD_3022"  # malformed XML, DTD/entities, wrong root, bad serial/networkType/version
EFOTA_FUD_SERVICE_ERROR = "FUD_9001"  # fault-injected 5xx
EFOTA_FUD_SERVICE_BUSY = "FUD_9003"  # fault-injected 429/503
EFOTA_GROUP_LICENSE_CHANGE_ROOT = "B2bGroupLicenseChangeVO"
EFOTA_LATEST_FIRMWARE = "Latest"
EFOTA_TOKEN_TYPE = "bearer"  # noqa: S105 - a token type, not a secret
EFOTA_TOKEN_SCOPE = "b2bfota"  # noqa: S105 - a scope name, not a secret
# Default knob values of the server.
DEFAULT_PORT = 8765
DEFAULT_STATE_DIR = "var/sandbox"
DEFAULT_TOKEN_TTL_SECONDS = 1800
DEFAULT_PROCESS_DELAY_SECONDS = 2.0
FAULT_NAMES = ("error", "throttle", "reset", "truncate", "garbage", "latency")
