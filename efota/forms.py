"""E-FOTA forms. Every field rule E-FOTA has (UTF-8 byte limits, upper-casing, serial numbers) is the client's
(`efota.client.check_ids`, `clean_serials`): the forms call those so a page and the client can never disagree,
and map `EfotaValidationError.errors` onto their own fields."""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Any

from django import forms
from django.conf import settings

from efota.client import EfotaValidationError, Ids, check_ids, clean_serials
from efota.constants import EFOTA_LATEST_FIRMWARE, EFOTA_NETWORK_TYPES
from efota.models import EfotaGroup, EfotaLicence
from portal import spreadsheets
from portal.forms import FileField
from portal.models import KnoxAccount

# A force update job stores its serial numbers in Job.params and starts one E-FOTA call per 100 devices; beyond
# this many, split the fleet into several jobs.
FORCE_UPDATE_MAX_DEVICES = 10_000
# The abnormal-devices report (a lookup job, its answer kept on the job): at most this many devices, 10 calls of 100.
ABNORMAL_MAX_DEVICES = 1_000
SPREADSHEET_EXTENSIONS = (".xlsx", ".xlsm", ".xls", ".csv", ".txt", ".tsv")
# Free text is bounded in characters here; E-FOTA's own limits are in bytes and checked by check_ids.
TEXT_MAX = 200

# EfotaValidationError field names -> our form field names.
ERROR_FIELDS = {"license": "licence", "mdm_id": "account"}


def efota_accounts() -> list[KnoxAccount]:
    """Active accounts with everything E-FOTA needs (client ID and secret, mdmId)."""
    return [a for a in KnoxAccount.objects.filter(is_active=True) if not a.missing_credentials("efota")]


def known_customer_ids(account: KnoxAccount | None = None) -> list[str]:
    """Customer IDs the portal has seen (groups and licences), for the datalist and the command's default."""
    groups = EfotaGroup.objects.all()
    licences = EfotaLicence.objects.all()
    if account is not None:
        groups, licences = groups.filter(account=account), licences.filter(account=account)
    ids = set(groups.values_list("customer_id", flat=True)) | set(licences.values_list("customer_id", flat=True))
    return sorted(i for i in ids if i)


def split_serials(text: str) -> list[str]:
    """Pasted serial numbers: one per line, or separated by commas, semicolons or spaces."""
    return [part for part in re.split(r"[\s,;]+", text) if part]


class EfotaForm(forms.Form):
    """Account, customer ID and licence: what every E-FOTA call carries."""

    account = forms.ModelChoiceField(queryset=KnoxAccount.objects.none(), label="Knox account", empty_label=None)
    customer_id = forms.CharField(
        label="E-FOTA customer ID", max_length=TEXT_MAX,
        help_text="At most 50 bytes, e.g. EEEE4444-FF55-AA66-BB77-CCCCCC888888.",
        widget=forms.TextInput(attrs={"list": "efota-customer-ids", "autocomplete": "off"}),
    )  # fmt: skip
    licence = forms.CharField(
        label="Licence", max_length=TEXT_MAX, help_text="At most 100 bytes, e.g. EFOTA1-fff555-ggg666-hh77."
    )

    group_field = False  # subclasses that carry a group ID check it too

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["account"].queryset = KnoxAccount.objects.filter(pk__in=[a.pk for a in efota_accounts()])

    def clean(self) -> dict[str, Any]:
        data = super().clean()
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
        account=account, customer_id=customer_id.strip(), group_id=group_id.strip().upper(),
        status=EfotaGroup.Status.REGISTERED,
    ).first()  # fmt: skip
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
        return licence


class LicenceCheckForm(EfotaForm):
    """Account, customer and licence: all a licence check needs (EfotaForm's fields)."""


class FirmwareForm(EfotaForm):
    model = forms.CharField(label="Device model", max_length=40, help_text="e.g. SM-G991B")
    sales_code = forms.CharField(label="Sales code", max_length=10, help_text="e.g. BTU")
    current = forms.CharField(
        label="Current firmware version",
        max_length=60,
        required=False,
        help_text="Optional: only newer versions are listed.",
    )


class SerialsMixin(forms.Form):
    """Serial numbers pasted into a text area and/or read from a spreadsheet column of serial numbers."""

    max_devices = FORCE_UPDATE_MAX_DEVICES

    serials = forms.CharField(
        label="Serial numbers", required=False, widget=forms.Textarea(attrs={"rows": 6}),
        help_text="One per line, or separated by commas: 11 letters and digits each.",
    )  # fmt: skip
    file = FileField(
        label="…or a spreadsheet", required=False, allow_empty_file=True,
        help_text="Excel (.xlsx, .xls) or CSV with a “Serial Number” column; only valid serial numbers are used.",
    )  # fmt: skip

    def clean_file(self) -> list[str]:
        f = self.cleaned_data.get("file")
        self.file_notes: list[str] = []
        if not f:
            return []
        if not f.name.lower().endswith(SPREADSHEET_EXTENSIONS):
            raise forms.ValidationError(
                f"“{f.name}” is not a spreadsheet this portal reads; use an Excel workbook (.xlsx, .xls) or a CSV file."
            )
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
    model = forms.CharField(label="Device model", max_length=40, help_text="e.g. SM-G991B")
    sales_code = forms.CharField(label="Sales code", max_length=10, help_text="e.g. BTU")
    target = forms.CharField(
        label="Target firmware version", max_length=60, initial=EFOTA_LATEST_FIRMWARE,
        help_text=f"A version from the firmware lookup, or “{EFOTA_LATEST_FIRMWARE}”.",
    )  # fmt: skip
    network_type = forms.ChoiceField(
        label="Download over", choices=[(t, "Wi-Fi only" if t == "WIFIONLY" else t) for t in EFOTA_NETWORK_TYPES]
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
