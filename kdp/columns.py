"""What KDP's spreadsheet downloads contain, column by column (portal.exports.Column: header, value, kind, width):
the device list's export, a job's report, a reconcile report, and the extra column of the invalid-rows export.

Declared here, apart from the views that send them, as data: staff and scripts read these headers, so a change
here is a change of a file format. Columns every service's reports share are portal.exports' (ROW_IN_FILE, ...).
"""

from portal import exports
from portal.exports import Column

DEVICES = [
    Column("IMEI / serial", "identifier", "identifier", 20),
    Column("Type", "kind", "text", 8),
    Column("IMEI", "imei", "identifier", 18),
    Column("Serial number", "serial_number", "identifier", 14),
    Column("MEID", "meid", "identifier", 18),
    exports.MODEL,
    Column("Customer ID", lambda d: d.customer.customer_id if d.customer else "", "identifier", 14),
    Column("Customer", lambda d: d.customer.name if d.customer else "", "text", 24),
    Column("KME profile alias", "profile_alias", "text", 18),
    Column("State", lambda d: d.get_state_display(), "text", 14),
    Column("Order number", "order_no", "identifier", 14),
    Column("Registered", "registered_at", "datetime", 20),
    exports.LAST_KNOX_CODE,
]
DEVICE_EXPORT = exports.Export(DEVICES, name="devices", sheet="Devices", related="customer")

# A job's per-device results (TransactionDevice rows).
RESULTS = [
    Column("IMEI / serial", "identifier", "identifier", 20),
    exports.ROW_IN_FILE,
    exports.OUTCOME,
    exports.KNOX_CODE,
    Column("Knox message", "message", "text", 34),
    exports.WHAT_IT_MEANS,
    Column("Knox detail", "data", "text", 40),
    Column("Knox transaction", lambda d: d.transaction.transaction_id, "identifier", 34),
]

# A reconcile's differences (ReconcileItem rows).
DRIFT = [
    Column("IMEI / serial", "identifier", "identifier", 20),
    Column("Difference", lambda r: r.get_drift_display(), "text", 30),
    Column("Customer in Knox", "knox_customer_id", "identifier", 18),
    Column("Customer in the portal", "local_customer_id", "identifier", 18),
    Column("Model", "model", "text", 16),
]

# After the row's own cells in the invalid-rows export (portal.previews.problem_rows_xlsx).
ORDER_NUMBER = Column("Order number", "order_no", "identifier", 16)
