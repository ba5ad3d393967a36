"""The columns of Knox Guard's downloads (the device export, an action job's report, the problem rows), kept
apart from the views as a file format that staff and scripts read (see kdp/columns.py)."""

from portal import exports
from portal.exports import Column

DEVICES = [
    Column("IMEI / serial", "device_uid", "identifier", 20),
    Column("Approve ID", "approve_id", "identifier", 20),
    Column("Knox objectId", "object_id", "identifier", 26),
    Column("State (API)", "state", "text", 16),
    Column("State (console)", "console_state", "text", 16),
    exports.MODEL,
    Column("Licence (recorded by staff)", "licence", "identifier", 22),
    Column("Account", lambda d: d.account.name, "text", 16),
    Column("Last action", "last_action", "text", 12),
    Column("Last outcome", "last_outcome", "text", 12),
    exports.LAST_KNOX_CODE,
    Column("Last message", "last_message", "text", 40),
    Column("Synced from Knox", "synced_at", "datetime", 20),
]
DEVICE_EXPORT = exports.Export(DEVICES, name="guard-devices", sheet="Knox Guard devices", related="account")

# An action job's per-device results (GuardAction rows).
RESULTS = [
    Column("Identifier as given", "device_uid", "identifier", 20),
    Column("IMEI / serial", lambda a: a.device.device_uid if a.device else "", "identifier", 20),
    exports.ROW_IN_FILE,
    Column("Action", "action", "text", 10),
    exports.OUTCOME,
    Column("State before", "state_before", "text", 14),
    Column("State after", "state_after", "text", 14),
    exports.KNOX_CODE,
    Column("Knox message", "message", "text", 30),
    Column("Reason", "reason", "text", 40),
    exports.WHAT_IT_MEANS,
    Column("Knox transaction", "transaction_id", "identifier", 34),
    Column("Finished", "finished_at", "datetime", 20),
]

# After the row's value in the problem-rows export (portal.previews.problem_rows_xlsx).
APPROVE_ID = Column("Approve ID", "approve_id", "identifier", 20)
