"""Knox Guard values, documented (seed 003, knox-api.md §4) or assumed (§6). Each comment names its evidence;
portal/knox/evidence.py holds the same in code and tests/test_evidence.py checks it."""

from __future__ import annotations

# Seed 003: at most 100 calls per second per IP, user or API token; 429 above it.
KG_MAX_REQUESTS_PER_SECOND = 100
# §6 q15: Knox Guard only takes the signed x-knox-apitoken (no `kg` OAuth scope).
KG_AUTH_SCHEME = "apitoken"
# §6 q17: devices per *Async request, body {"deviceList": [<sync body>, ...]}.
KG_ASYNC_MAX_DEVICES = 1000
# §6 q18: largest pageSize of devices/list and the uploads listings (seed 003 states it for uploads).
KG_MAX_PAGE_SIZE = 1000
# §6 q19: x-knox-transactionId is alphanumeric; we send uuid4().hex.
KG_TRANSACTION_ID_MAX_LENGTH = 32
# §6 q20: the blink rules for message and contact apply to lock and sendMessage too.
KG_MESSAGE_MAX_LENGTH = 200
KG_CONTACT_REQUIRED = True
# §6 q21: the API spells states as the seed's "State" column, in the seed's order.
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
# Seed 003 field rules.
KG_UPLOAD_MAX_DEVICES = 10_000
KG_APPROVE_ID_MAX_LENGTH = 50
KG_APPROVE_COMMENT_MAX_LENGTH = 1000
KG_BLINK_INTERVAL_MIN = 3
KG_BLINK_INTERVAL_MAX = 86_400
# No "stop blinking" call is documented: unlocking a Blinked device stops the reminder (an assumption the
# sandbox shares; docs/sandbox.md "Assumptions").
KG_BLINK_STOP_ACTION = "unlock"

# Console labels for the API states (seed 003 "External State (on Console)").
KG_CONSOLE_LABELS = {
    "Pending": "Pending",
    "Rejected": "Rejected",
    "Accepted": "Activating",
    "Enrolled": "Active",
    "Exchanging": "Exchanging",
    "Resetting": "Resetting",
    "StartingReminder": "Starting Reminder",
    "StoppingReminder": "Stopping Reminder",
    "Blinked": "Reminder On",
    "Locking": "Locking",
    "Locked": "Locked",
    "Unlocking": "Unlocking",
    "Completing": "Completing",
    "Completed": "Completed",
}
