"""Plain words for the codes the portal stores: audit actions ("kdp.file_upload"), job kinds ("kdp.reconcile") and
the keys of an audit event's summary ({"hour_utc": 3}). Pages and the admin show these words; the codes stay in
the database (and in a tooltip) for filtering and for whoever reads the logs.

A code without an entry here still reads as words: its service's name and the rest with spaces ("guard.lock" →
"Knox Guard: lock"), so a new action is never shown as a raw code. Portal may not import the service apps, so
the words for their codes live here.
"""

from __future__ import annotations

from typing import Any

from django.template.defaultfilters import filesizeformat

SERVICES = {
    "kdp": "KDP",
    "guard": "Knox Guard",
    "efota": "E-FOTA",
    "account": "Knox account",
    "auth": "Login",
    "job": "Job",
    "user": "Staff user",
    "group": "Role",
    "permission": "Permission",
    "portal": "Portal",
    "secrets": "Secrets",
    "uploads": "Spreadsheets",
}

ACTIONS = {
    "account.create": "Knox account added",
    "account.update": "Knox account changed",
    "account.keys_upload": "keys.json uploaded",
    "account.test_connection": "Connection tested",
    "auth.login": "Logged in",
    "auth.logout": "Logged out",
    "auth.login_failed": "Login failed",
    "auth.login_refused": "Login refused (too many failures)",
    "auth.login_locked": "Login locked (too many failures)",
    "auth.login_unlocked": "Login unlocked",
    "job.cancel": "Job cancelled",
    "secrets.rotate": "Secrets re-encrypted with the new key",
    "uploads.cleanup": "Old spreadsheets deleted",
    "user.settings": "Own settings changed",
    "user.create": "Staff user added",
    "user.change": "Staff user changed",
    "user.delete": "Staff user deleted",
    "group.create": "Role added",
    "group.change": "Role changed",
    "group.delete": "Role deleted",
    "kdp.file_upload": "KDP spreadsheet uploaded",
    "kdp.upload": "KDP registration queued",
    "kdp.delete": "KDP delete queued",
    "kdp.retry": "KDP retry queued",
    "kdp.customers_refresh": "KDP customers refreshed",
    "kdp.reconcile": "KDP comparison with Knox queued",
    "kdp.reconcile_schedule": "Daily KDP comparison scheduled",
    "kdp.reconcile_unschedule": "Daily KDP comparison stopped",
    "kdp.export": "KDP list downloaded",
    "guard.file_upload": "Knox Guard spreadsheet uploaded",
    "guard.upload": "Devices uploaded to Knox Guard",
    "guard.upload_results": "Knox Guard upload results read",
    "guard.retry": "Knox Guard retry queued",
    "guard.sync": "Knox Guard devices read from Knox",
    "guard.sync_schedule": "Daily Knox Guard sync scheduled",
    "guard.sync_unschedule": "Daily Knox Guard sync stopped",
    "guard.export": "Knox Guard list downloaded",
    "efota.register_group": "E-FOTA group registered",
    "efota.license_change": "E-FOTA group moved to another licence",
    "efota.force_update": "E-FOTA force update started",
    "efota.force_update_refresh": "E-FOTA force update status asked",
    "efota.license_info": "E-FOTA licence checked",
    "efota.firmware_list": "E-FOTA firmware listed",
    "efota.abnormal_devices": "E-FOTA abnormal devices checked",
}

KINDS = {
    "kdp.upload": "KDP: register devices",
    "kdp.delete": "KDP: delete devices",
    "kdp.parse": "KDP: read a spreadsheet",
    "kdp.customers": "KDP: refresh customers",
    "kdp.reconcile": "KDP: compare with Knox",
    "guard.parse": "Knox Guard: read a spreadsheet",
    "guard.upload": "Knox Guard: upload devices",
    "guard.upload_results": "Knox Guard: read upload results",
    "guard.sync": "Knox Guard: read devices from Knox",
    "guard.knox_uploads": "Knox Guard: list Knox's uploads",
    "efota.register": "E-FOTA: register a group",
    "efota.license_change": "E-FOTA: change a group's licence",
    "efota.force_update": "E-FOTA: force update",
    "efota.force_update_refresh": "E-FOTA: refresh a force update's status",
    "efota.licence": "E-FOTA: check a licence",
    "efota.firmware": "E-FOTA: list firmware",
    "efota.abnormal": "E-FOTA: check abnormal devices",
    "portal.connection_test": "Test a Knox connection",
}

SUMMARY_KEYS = {
    "file": "File",
    "bytes": "Size",
    "operation": "Operation",
    "devices": "Devices",
    "customer": "Customer ID",
    "account": "Account number",
    "via": "Through",
    "what": "What",
    "format": "Format",
    "filter": "Filter",
    "hour_utc": "Hour (UTC)",
    "schedule": "Schedule",
    "retry_of": "Retry of job",
    "job": "Job",
    "parts": "Parts",
    "failed": "Failed",
    "group": "Group ID",
    "licence": "Licence",
    "from": "From",
    "to": "To",
    "serials": "Devices",
    "ok": "Succeeded",
    "code": "Knox code",
    "username": "User name",
    "scope": "Locked for",
    "failures": "Failed attempts",
    "minutes_left": "Minutes left",
    "identifier": "keys.json identifier",
    "secrets_rewritten": "Secrets re-encrypted",
    "action": "Action",
    "params": "Settings",
    "typed_confirmation": "Typed confirmation",
    "flags": "Policy flags",
    "kind": "Job kind",
    "profile_alias": "Profile alias",
    "order_no": "Order number",
    "customer_id": "Customer ID",
    "email_on_job_end": "Email when a job ends",
    "deleted": "Deleted",
}

# Parts of generated labels written the way staff write them.
_ACRONYMS = {"id": "ID", "ids": "IDs", "url": "URL", "utc": "UTC", "imei": "IMEI", "kdp": "KDP", "ip": "IP"}
# A list in a summary shows this many items, then how many more.
LIST_ITEMS_SHOWN = 10


def _words(code: str) -> str:
    parts = code.replace("-", " ").replace("_", " ").split()
    words = " ".join(_ACRONYMS.get(p.lower(), p) for p in parts)
    return words[:1].upper() + words[1:]


def _service_words(code: str, known: dict[str, str]) -> str:
    if code in known:
        return known[code]
    service, dot, rest = code.partition(".")
    if dot and service in SERVICES:
        return f"{SERVICES[service]}: {_words(rest).lower() if rest else ''}".rstrip(": ")
    return _words(code)


def action_label(action: str) -> str:
    """ "kdp.file_upload" → "KDP spreadsheet uploaded"; an unknown "guard.lock" → "Knox Guard: lock"."""
    return _service_words(action, ACTIONS)


def kind_label(kind: str) -> str:
    """ "kdp.reconcile" → "KDP: compare with Knox"; an unknown "guard.lock" → "Knox Guard: lock"."""
    return _service_words(kind, KINDS)


def key_label(key: str) -> str:
    return SUMMARY_KEYS.get(key) or _words(key)


def value_text(key: str, value: Any) -> str:
    """One summary value as plain text: yes/no, sizes in bytes, lists and nested settings on one line."""
    if value is None or value == "":
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if key == "bytes" and isinstance(value, int):
        return str(filesizeformat(value))
    if key in ("action", "kind") and isinstance(value, str):
        return kind_label(value) if key == "kind" else _words(value).lower()
    if isinstance(value, dict):
        return "; ".join(f"{key_label(k)}: {value_text(k, v)}" for k, v in value.items()) or "—"
    if isinstance(value, (list, tuple)):
        shown = ", ".join(value_text(key, v) for v in value[:LIST_ITEMS_SHOWN])
        more = len(value) - LIST_ITEMS_SHOWN
        return f"{shown} and {more} more" if more > 0 else (shown or "—")
    return str(value)


def summary_items(summary: Any) -> list[tuple[str, str]]:
    """An audit event's summary as (label, value) pairs, in its order."""
    if not isinstance(summary, dict):
        return [("Details", value_text("", summary))] if summary not in (None, "", [], {}) else []
    return [(key_label(str(k)), value_text(str(k), v)) for k, v in summary.items()]
