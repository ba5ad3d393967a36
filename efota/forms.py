"""E-FOTA forms. Every field rule E-FOTA has (UTF-8 byte limits, upper-casing, serial numbers) and the portal's
limits on the device fields are the client's (`efota.client.check_ids`, `clean_serials`, `check_device_fields`):
the forms call those so a page and the client can never disagree, and map `EfotaValidationError.errors` onto
their own fields."""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from django import forms
from django.conf import settings
from django.utils import timezone

from efota.client import DEVICE_FIELDS, EfotaValidationError, Ids, check_device_fields, check_ids, clean_serials
from efota.constants import EFOTA_LATEST_FIRMWARE, EFOTA_NETWORK_TYPES
from efota.models import EfotaGroup, EfotaLicence
from portal import spreadsheets
from portal.forms import SpreadsheetField
from portal.models import KnoxAccount

# A force update job stores its serial numbers in Job.params and starts one E-FOTA call per 100 devices; beyond
# this many, split the fleet into several jobs.
FORCE_UPDATE_MAX_DEVICES = 10_000
# The abnormal-devices report (a lookup job, its answer kept on the job): at most this many devices, 10 calls of 100.
ABNORMAL_MAX_DEVICES = 1_000
# Free text is bounded in characters here; E-FOTA's own limits are in bytes and checked by check_ids.
TEXT_MAX = 200

# EfotaValidationError field names -> our form field names.
ERROR_FIELDS = {"license": "licence", "mdm_id": "account"}


def device_field(name: str, label: str, **kwargs: Any) -> forms.CharField:
    """A text field for one of E-FOTA's device fields (efota.client.DEVICE_FIELDS). Its limit is checked in
    EfotaForm.clean by check_device_fields, the check queue_force_update and the client make too; `maxlength`
    only stops the browser there."""
    widget = forms.TextInput(attrs={"maxlength": DEVICE_FIELDS[name].max_length})
    return forms.CharField(label=label, widget=widget, **kwargs)


def efota_accounts() -> list[KnoxAccount]:
    """Active accounts with everything E-FOTA needs (client ID and secret, mdmId)."""
    return [a for a in KnoxAccount.objects.filter(is_active=True) if not a.missing_credentials("efota")]


@dataclass(frozen=True)
class KnownLicence:
    """A licence the portal knows for an account and customer: checked on the Licences page, or the licence of a
    registered group. `problem` says why it can't be used ("" when it can)."""

    account_id: int
    account_name: str
    customer_id: str
    key: str
    label: str  # what the list shows next to the key: expiry and devices, or the group it came from
    problem: str = ""


def known_licences(account: KnoxAccount | None = None) -> list[KnownLicence]:
    """Every licence the portal knows (active accounts), checked ones first: what a check said beats what a group
    implies. The portal can't list a customer's licences at E-FOTA (there is no such call), so this is what it
    has seen."""
    licences = EfotaLicence.objects.select_related("account").filter(account__is_active=True)
    groups = EfotaGroup.objects.select_related("account").filter(
        account__is_active=True, status=EfotaGroup.Status.REGISTERED
    )
    if account is not None:
        licences, groups = licences.filter(account=account), groups.filter(account=account)
    found: dict[tuple[int, str, str], KnownLicence] = {}
    for lic in licences.order_by("customer_id", "key"):
        found[(lic.account_id, lic.customer_id, lic.key)] = KnownLicence(
            lic.account_id, str(lic.account), lic.customer_id, lic.key, _licence_label(lic), _licence_problem(lic)
        )
    for group in groups.order_by("customer_id", "licence", "group_id"):
        key = (group.account_id, group.customer_id, group.licence)
        if key not in found:
            label = f"licence of group {group.group_id}, not checked yet"
            found[key] = KnownLicence(group.account_id, str(group.account), group.customer_id, group.licence, label)
    return list(found.values())


def _licence_label(lic: EfotaLicence) -> str:
    if lic.last_error:
        return "last check failed"
    if lic.checked_at is None:
        return "not checked yet"
    devices = f"{lic.max_devices:,} devices" if lic.max_devices is not None else "devices not given"
    if lic.expiration_date is None:
        return devices
    return f"{'expired' if lic.is_expired else 'expires'} {lic.expiration_date.isoformat()}, {devices}"


def _licence_problem(lic: EfotaLicence) -> str:
    checked = f" (checked {timezone.localtime(lic.checked_at):%Y-%m-%d %H:%M})" if lic.checked_at else ""
    if lic.last_error:
        return (
            f"The last check of licence {lic.key}{checked} failed: {lic.last_error.rstrip('.')}. Check it again on "
            "the Licences page once that is sorted out, or choose another licence."
        )
    if lic.is_expired:
        return (
            f"Licence {lic.key} expired on {lic.expiration_date}{checked}; E-FOTA refuses an expired licence. Choose "
            "another licence, or check it again on the Licences page if it was renewed."
        )
    return ""


# The usable licences an "unknown licence" message names; the list offers them all.
OFFERED_IN_MESSAGE = 5


def unknown_ids_errors(account: KnoxAccount, customer_id: str, licence: str) -> dict[str, str]:
    """Field -> message for a customer ID or licence the portal doesn't know for this account (or knows to be
    unusable: expired, or its last check failed); empty when both are known and usable."""
    customer_id, licence = customer_id.strip(), licence.strip()
    known = [k for k in known_licences(account) if k.customer_id == customer_id]
    if not known:
        return {
            "customer_id": f"The portal knows no licence or group of customer ID {customer_id} on {account}. Choose "
            "one from the list, or check one of this customer's licences on the Licences page first: it is then "
            "offered here."
        }
    match = next((k for k in known if k.key == licence), None)
    if match is None:
        usable = [k.key for k in known if not k.problem]
        offered = ", ".join(usable[:OFFERED_IN_MESSAGE])
        if len(usable) > OFFERED_IN_MESSAGE:
            offered += f" and {len(usable) - OFFERED_IN_MESSAGE} more in the list"
        choose = f"Choose one of {offered}" if offered else "Choose another licence"
        return {
            "licence": f"The portal doesn't know licence {licence} for customer ID {customer_id} on {account}. "
            f"{choose}, or check this licence on the Licences page first."
        }
    return {"licence": match.problem} if match.problem else {}


def known_customer_ids(account: KnoxAccount | None = None) -> list[str]:
    """Customer IDs the portal has seen (groups and licences), for the datalist and the command's default."""
    groups = EfotaGroup.objects.all()
    licences = EfotaLicence.objects.all()
    if account is not None:
        groups, licences = groups.filter(account=account), licences.filter(account=account)
    ids = set(groups.values_list("customer_id", flat=True)) | set(licences.values_list("customer_id", flat=True))
    return sorted(i for i in ids if i)


def id_choices(*, usable_only: bool = True) -> dict[str, Any]:
    """The customer IDs and licences the E-FOTA forms' lists offer (efota/_form_fields.html)."""
    licences = known_licences()
    customers: dict[tuple[str, str], int] = {}
    for k in licences:
        customers[(k.customer_id, k.account_name)] = customers.get((k.customer_id, k.account_name), 0) + 1
    return {
        "customer_options": [
            (customer, f"{account} · {n} licence{'s' if n != 1 else ''}")
            for (customer, account), n in customers.items()
        ],
        "licence_options": [k for k in licences if not (usable_only and k.problem)],
    }


NETWORK_LABELS = {"WIFIONLY": "Wi-Fi only"}


def network_label(network_type: str) -> str:
    """E-FOTA's network type in words ("WIFIONLY" -> "Wi-Fi only")."""
    return NETWORK_LABELS.get(network_type, network_type)


def split_serials(text: str) -> list[str]:
    """Pasted serial numbers: one per line, or separated by commas, semicolons or spaces."""
    return [part for part in re.split(r"[\s,;]+", text) if part]


class EfotaForm(forms.Form):
    """Account, customer ID and licence: what every E-FOTA call carries."""

    account = forms.ModelChoiceField(queryset=KnoxAccount.objects.none(), label="Knox account", empty_label=None)
    # Text inputs with a list of what the portal knows (a datalist): typing filters the long IDs, and the licence
    # check accepts a customer or licence the portal has never seen (that is how it learns them). The other forms
    # refuse an unknown value with a message (`unknown_ids_errors`).
    customer_id = forms.CharField(
        label="E-FOTA customer ID",
        max_length=TEXT_MAX,
        help_text="Choose from the list of customers the portal knows (at most 50 bytes).",
        widget=forms.TextInput(attrs={"list": "efota-customer-ids", "autocomplete": "off"}),
    )
    licence = forms.CharField(
        label="Licence",
        max_length=TEXT_MAX,
        help_text="Choose from the list of licences the portal knows for the customer (at most 100 bytes).",
        widget=forms.TextInput(attrs={"list": "efota-licences", "autocomplete": "off"}),
    )

    group_field = False  # subclasses that carry a group ID check it too
    # The customer ID and licence must be ones the portal knows for the account (checked on the Licences page, or
    # a registered group's); only the licence check itself takes new ones.
    require_known = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["account"].queryset = KnoxAccount.objects.filter(pk__in=[a.pk for a in efota_accounts()])

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        self.check_device_fields(data)
        account = data.get("account")
        if account is None:
            return data
        ids = Ids(account.efota_mdm_id, data.get("customer_id", ""), data.get("licence", "")).normalised()
        group = data.get("group_id", "").strip().upper() if self.group_field else None
        try:
            check_ids(ids, group_id=group)
        except EfotaValidationError as e:
            # A field Django already refused (required, too long) keeps that one message.
            self.add_efota_errors(e, skip=set(self.errors))
            return data
        if self.require_known and not self.errors:
            for name, message in unknown_ids_errors(account, ids.customer_id, ids.license).items():
                self.add_error(name, message)
        return data

    def check_device_fields(self, data: dict[str, Any]) -> None:
        """The limits of the device fields this form has (model, sales code, a version), as the client checks
        them; a field Django already refused keeps its one message."""
        given = {name: data[name] for name in DEVICE_FIELDS if name in self.fields and name in data}
        try:
            check_device_fields(**given)
        except EfotaValidationError as e:
            self.add_efota_errors(e, skip=set(self.errors))

    def choices(self) -> dict[str, Any]:
        """What the page's lists offer (efota/_form_fields.html): known customer IDs and licences, each with
        the account it belongs to; a form that needs usable licences leaves out expired and failed ones."""
        return id_choices(usable_only=self.require_known)

    def add_efota_errors(self, e: EfotaValidationError, *, skip: Collection[str] = ()) -> None:
        """Put each of the client's per-field errors on the matching field (else on the form)."""
        for name, message in e.errors.items():
            name = ERROR_FIELDS.get(name, name)
            if name in skip:
                continue
            if name == "account":
                message = f"This account's E-FOTA mdmId is not usable: {message}"
            self.add_error(name if name in self.fields else None, message)


def registered_elsewhere(account: KnoxAccount, customer_id: str, group_id: str, licence: str) -> str:
    """Why registering this group to this licence must go through "Change licence" instead ("" when it need not).

    E-FOTA refuses a group registered to another licence (FUD_3019), and queue_register would first overwrite the
    record's licence and status, leaving the portal showing the group unregistered on the new licence while
    E-FOTA keeps it on the old one."""
    group = EfotaGroup.objects.filter(
        account=account,
        customer_id=customer_id.strip(),
        group_id=group_id.strip().upper(),
        status=EfotaGroup.Status.REGISTERED,
    ).first()
    if group is None or group.licence == licence.strip():
        return ""
    return f"Group {group.group_id} is already registered to {group.licence}; use “Change licence” to move it."


class RegisterGroupForm(EfotaForm):
    group_id = forms.CharField(
        label="Group ID",
        max_length=TEXT_MAX,
        help_text="The group name the enterprise admin set; at most 50 bytes, upper-cased as E-FOTA treats it.",
    )
    field_order = ["account", "customer_id", "group_id", "licence"]
    group_field = True

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if not self.errors:
            elsewhere = registered_elsewhere(data["account"], data["customer_id"], data["group_id"], data["licence"])
            if elsewhere:
                self.add_error("licence", elsewhere)
        return data


class ChangeLicenceForm(forms.Form):
    licence = forms.CharField(label="New licence", max_length=TEXT_MAX)

    @staticmethod
    def options(group: EfotaGroup, known: list[KnownLicence] | None = None) -> list[KnownLicence]:
        """The licences the group can move to: the usable ones the portal knows for its customer, but its own.
        `known`: every known licence, read once for a page of groups."""
        known = known_licences(group.account) if known is None else known
        return [
            k
            for k in known
            if k.account_id == group.account_id
            and k.customer_id == group.customer_id
            and not k.problem
            and k.key != group.licence
        ]

    def __init__(self, *args: Any, group: EfotaGroup, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.group = group

    def clean_licence(self) -> str:
        licence = self.cleaned_data["licence"].strip()
        missing = self.group.account.missing_credentials("efota")
        if missing or not self.group.account.is_active:
            needs = f": it needs {', '.join(missing)}" if missing else " (it is switched off)"
            raise forms.ValidationError(f"The account {self.group.account} cannot call E-FOTA{needs}.")
        if licence == self.group.licence and self.group.status == EfotaGroup.Status.REGISTERED:
            raise forms.ValidationError(f"Group {self.group.group_id} is already registered to {licence}.")
        ids = Ids(self.group.account.efota_mdm_id, self.group.customer_id, licence).normalised()
        try:
            check_ids(ids, group_id=self.group.group_id)
        except EfotaValidationError as e:
            raise forms.ValidationError(list(e.errors.values())) from None
        unknown = unknown_ids_errors(self.group.account, self.group.customer_id, licence)
        if unknown:
            raise forms.ValidationError(list(unknown.values()))
        return licence


class LicenceCheckForm(EfotaForm):
    """Account, customer and licence: all a licence check needs (EfotaForm's fields). A customer ID or licence
    the portal has not seen is welcome here: checking it is how the portal learns it."""

    require_known = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["customer_id"].help_text = "Choose from the list, or type a new one (at most 50 bytes)."
        self.fields["licence"].help_text = "Choose from the list, or type a new one (at most 100 bytes)."


class FirmwareForm(EfotaForm):
    model = device_field("model", "Device model", help_text="e.g. SM-G991B")
    sales_code = device_field("sales_code", "Sales code", help_text="e.g. BTU")
    current = device_field(
        "current", "Current firmware version", required=False, help_text="Optional: only newer versions are listed."
    )


class SerialsMixin(forms.Form):
    """Serial numbers pasted into a text area and/or read from a spreadsheet column of serial numbers."""

    max_devices = FORCE_UPDATE_MAX_DEVICES

    serials = forms.CharField(
        label="Serial numbers",
        required=False,
        widget=forms.Textarea(attrs={"rows": 6}),
        help_text="One per line, or separated by commas: 11 letters and digits each.",
    )
    file = SpreadsheetField(
        label="…or a spreadsheet",
        required=False,
        help_text="Excel (.xlsx, .xls) or CSV with a “Serial Number” column; only valid serial numbers are used.",
    )

    def clean_file(self) -> list[str]:
        f = self.cleaned_data.get("file")
        self.file_notes: list[str] = []
        if not f:
            return []
        try:
            serials, notes = read_serials(f, f.name, max_rows=self.max_devices)
        except spreadsheets.SpreadsheetError as e:
            raise forms.ValidationError(e.message) from None
        if not serials:
            raise forms.ValidationError(
                "The spreadsheet holds no valid serial number; put them in a column named “Serial Number”. "
                + " ".join(notes)
            )
        self.file_notes = notes
        return serials

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if "serials" in self.errors or "file" in self.errors:
            return data
        pasted = split_serials(data.get("serials", ""))
        try:
            devices = clean_serials([*pasted, *data.get("file", [])])
        except EfotaValidationError as e:
            self.add_error("serials", e.errors["serials"])
            return data
        if len(devices) > self.max_devices:
            self.add_error("serials", f"{len(devices)} devices: at most {self.max_devices:,} at once; split the list.")
            return data
        data["devices"] = devices
        return data


class ForceUpdateForm(SerialsMixin, EfotaForm):
    model = device_field("model", "Device model", help_text="e.g. SM-G991B")
    sales_code = device_field("sales_code", "Sales code", help_text="e.g. BTU")
    target = device_field(
        "target",
        "Target firmware version",
        initial=EFOTA_LATEST_FIRMWARE,
        help_text=f"A version from the firmware lookup, or “{EFOTA_LATEST_FIRMWARE}”.",
    )
    network_type = forms.ChoiceField(
        label="Download over", choices=[(t, network_label(t)) for t in EFOTA_NETWORK_TYPES]
    )
    field_order = [
        "account",
        "customer_id",
        "licence",
        "model",
        "sales_code",
        "target",
        "network_type",
        "serials",
        "file",
    ]


class AbnormalForm(SerialsMixin, EfotaForm):
    max_devices = ABNORMAL_MAX_DEVICES
    field_order = ["account", "customer_id", "licence", "serials", "file"]


def read_serials(source: Any, filename: str, *, max_rows: int) -> tuple[list[str], list[str]]:
    """The valid serial numbers of a spreadsheet, and sentences about the rows left out.

    The reader picks an IMEI column before a serial-number column; when the sheet has both, read the serial one.
    """
    options = {"max_bytes": settings.SPREADSHEET_MAX_BYTES, "max_rows": max_rows}
    with spreadsheets.open_spreadsheet(source, filename, **options) as sheet:
        column = sheet.device_column
        if column.kind != "serial":
            column = next((c for c in sheet.candidates if c.kind == "serial"), column)
    if hasattr(source, "seek"):
        source.seek(0)
    serials: list[str] = []
    left_out = 0
    with spreadsheets.open_spreadsheet(source, filename, device_column=column.index, **options) as sheet:
        for row in sheet.iter_rows():
            if row.status == spreadsheets.Status.VALID and row.verdict.kind == "serial":
                serials.append(row.verdict.value)
            elif row.status != spreadsheets.Status.SKIPPED:
                left_out += 1
    notes = (
        [f"{left_out} row{'s' if left_out != 1 else ''} left out (not a valid serial number, or a duplicate)."]
        if left_out
        else []
    )
    return serials, notes
