"""KDP values Samsung does not document (knox-api.md §6): one named constant each, whose comment names its
evidence (seed, Samsung docs, public client or guess). portal/knox/evidence.py holds the same in code and
tests/test_evidence.py checks it; the sandbox follows the same assumption independently, leniently where it is
not a seed's. When Samsung documents a value, change it here and record the source in knox-api.md."""

from __future__ import annotations

# q1 (guess): devices per upload/delete request; larger uploads are split into chunks of at most this many.
KDP_MAX_DEVICES_PER_REQUEST = 1000
# q2: `type` literals ("IMEI": seed 001; "SN": the Gen1 public client); MEIDs cannot be uploaded.
KDP_DEVICE_TYPE_IMEI = "IMEI"
KDP_DEVICE_TYPE_SERIAL = "SN"
# q3 (guess; seed 002 names the object, not its members): members of a ProfileAliasObject and their service.
KDP_PROFILE_ALIAS_SERVICE_KEY = "service"
KDP_PROFILE_ALIAS_NAME_KEY = "aliasName"
KDP_TARGET_SERVICE_KME = "KME"
# q4 (seed 002): the profile-alias call takes these as headers (since July 2020); the answer (a guess) is
# [{aliasName, profileId}].
KDP_PROFILE_ALIAS_HEADERS = ("resellerId", "customerId")
# q5 (public client, Gen1): the immediate answer to upload/delete; the client relies only on 2xx.
KDP_ACCEPTED_STATE = "Progress"
KDP_SUCCESS_CODE = 2000000
# q6 (public client, Gen1): status query parameters.
KDP_STATUS_QUERY_PARAMS = ("transactionId",)
# q7: states after which a transaction no longer changes (seed 001 "Complete", Gen1 client "Rejected"); give up
# polling after this long (guess).
KDP_TERMINAL_STATES = ("Complete", "Rejected")
KDP_POLL_TIMEOUT_SECONDS = 3600
# q8 (guess; seed 001's examples are numeric strings): we send uuid4().hex (32 characters).
KDP_TRANSACTION_ID_MAX_LENGTH = 32
# q9 (guess; seed 001's example answers pageSize 1000000): device-list paging.
KDP_PAGE_SIZE = 1000
# q10 (seed 001): the documented V2 list key is `mei`, V1's is `imei`; take the first present.
KDP_LIST_IMEI_KEYS = ("imei", "mei")
# q11 (guess): no published KDP rate limit; Knox Configure documents 10 requests/s per token.
KDP_MAX_REQUESTS_PER_SECOND = 10
# q12: HTTP status of each KDP code (§3.10). A guess for 40000044, 4042104 and 4092100, whose status is not
# documented: it follows their leading digits.
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

# Portal-side choices (not shared with the sandbox).
# Knox cannot have settled a transaction sooner than this after accepting it (a guess: Knox publishes no figure;
# the sandbox's default process delay is the same), so the first status poll waits this long: an earlier one
# spends a rate-limit slot only to hear "Progress". Later polls back off by POLL_BACKOFF up to POLL_MAX_INTERVAL.
KDP_PROCESSING_SECONDS = 2.0
POLL_FIRST_DELAY_SECONDS = KDP_PROCESSING_SECONDS
POLL_BACKOFF = 1.5
POLL_MAX_INTERVAL_SECONDS = 30.0
