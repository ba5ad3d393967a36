from __future__ import annotations

import calendar
import datetime as dt
from typing import Any

from django import forms

from kdp.models import (
    Customer,
    CustomerGroup,
    Device,
    ProfileAlias,
    ReconcileItem,
    Target,
    TransactionDevice,
    mismatch_refusal,
    recorded_customers,
)
from portal.forms import MAX_ID, FilterDateField, ServiceAccountForm, SpreadsheetField, daily_hour_field
from portal.models import KnoxAccount, Upload
from portal.widgets import QuickSelect

KDP_OPERATIONS = (Upload.Operation.UPLOAD, Upload.Operation.DELETE)


def kdp_accounts() -> list[KnoxAccount]:
    """Active accounts that can call KDP (Gen1 or Gen2) right now."""
    return [a for a in KnoxAccount.objects.filter(is_active=True) if not a.missing_credentials(a.kdp_service())]


class UploadForm(forms.Form):
    # allow_empty_file: our own clean_file explains an empty file better than Django's generic message.
    file = SpreadsheetField(label="Spreadsheet", help_text="Excel (.xlsx, .xls) or CSV; one device per row.")
    account = forms.ModelChoiceField(queryset=KnoxAccount.objects.none(), label="Knox account", empty_label=None)
    # KDP's own operations only: Upload.Operation also holds Knox Guard's, which have their own pages.
    operation = forms.ChoiceField(
        choices=[(op.value, op.label) for op in KDP_OPERATIONS],
        initial=Upload.Operation.UPLOAD,
        widget=forms.RadioSelect,
    )
    allow_bad_check_digit = forms.BooleanField(
        required=False,
        label="Accept IMEIs whose check digit is wrong",
        help_text="Some of Samsung's own test IMEIs fail the check; leave this off for real orders.",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        ready = kdp_accounts()
        self.fields["account"].queryset = KnoxAccount.objects.filter(pk__in=[a.pk for a in ready])


class RestageForm(forms.Form):
    """Pick the sheet or the device column when the file is ambiguous."""

    sheet = forms.CharField(required=False, max_length=100)
    device_column = forms.CharField(required=False, max_length=200)
    allow_bad_check_digit = forms.BooleanField(required=False)


def _order_time(day: dt.date | None) -> int | None:
    """Order date as epoch seconds (the one documented example, knox-api.md §3.2)."""
    return calendar.timegm(dt.datetime.combine(day, dt.time.min).timetuple()) if day else None


class ConfirmForm(forms.Form):
    """Step 3 for a one-customer spreadsheet: the customer (and, to register, the profile alias and order)."""

    RECORDED = "recorded"
    TARGETS = [
        ("chosen", "Delete them from the customer chosen here"),
        (RECORDED, "Delete each device from the customer it is registered to (one job per customer)"),
    ]

    customer = forms.ModelChoiceField(queryset=Customer.objects.none(), empty_label="Choose a customer…")
    target = forms.ChoiceField(choices=TARGETS, initial="chosen", required=False, widget=forms.RadioSelect)
    profile_alias = forms.CharField(required=False, max_length=200, label="KME profile alias")
    order_no = forms.CharField(required=False, max_length=100, label="Order number")
    order_date = forms.DateField(required=False, label="Order date", widget=forms.DateInput(attrs={"type": "date"}))

    def __init__(self, *args: Any, upload: Upload, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.upload = upload
        self.fields["customer"].queryset = Customer.objects.filter(account=upload.account, present_in_knox=True)
        if upload.operation == Upload.Operation.DELETE:
            del self.fields["profile_alias"], self.fields["order_no"], self.fields["order_date"]
            self.fields["customer"].required = False  # not needed to delete from the recorded customers
        else:
            del self.fields["target"]

    def clean_customer(self) -> Customer | None:
        customer = self.cleaned_data["customer"]
        if customer is not None and customer.is_pending and self.upload.operation == Upload.Operation.UPLOAD:
            raise forms.ValidationError(
                f"{customer.name} is still pending verification in Knox; devices can be registered once Samsung verifies the customer."
            )
        return customer

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        customer = data.get("customer")
        if self.upload.operation == Upload.Operation.DELETE:
            self._clean_delete(data)
            return data
        alias = (data.get("profile_alias") or "").strip()
        if alias and customer and not ProfileAlias.objects.filter(customer=customer, name=alias).exists():
            self.add_error(
                "profile_alias",
                f"{customer.name} has no KME profile alias “{alias}”; refresh the customer list if it was just created.",
            )
        data["profile_alias"] = alias
        return data

    def _clean_delete(self, data: dict[str, Any]) -> None:
        """A delete goes to the customer each device is registered to: Knox refuses (40000044) to delete a device
        from any other, so a chosen customer that the portal's records contradict is refused here, before Knox."""
        customer = data.get("customer")
        if data.get("target") == self.RECORDED:
            if not recorded_customers(self.upload).by_customer:
                self.add_error(
                    "target",
                    "The portal's records show none of these devices registered to a customer; choose the customer "
                    "to delete them from.",
                )
            return
        if customer is None:
            if not self.has_error("customer"):
                self.add_error("customer", "Choose the customer to delete the devices from.")
            return
        refusal = mismatch_refusal(self.upload, customer)
        if refusal:
            self.add_error("customer", f"{refusal} (the choice below).")

    def order_time(self) -> int | None:
        return _order_time(self.cleaned_data.get("order_date"))

    def targets(self) -> list[Target]:
        """The jobs to queue: one for the chosen customer, or one per recorded customer."""
        d = self.cleaned_data
        if self.upload.operation == Upload.Operation.DELETE and d.get("target") == self.RECORDED:
            return [
                Target(customer, n, rows={"recorded_customer": True})
                for customer, n in recorded_customers(self.upload).by_customer
            ]
        return [Target(d["customer"], self.upload.valid, d.get("profile_alias", ""))]


class MultiConfirmForm(forms.Form):
    """Step 3 for a spreadsheet with a customer column: a profile alias per customer, one order for all, and, when
    some rows' customer cannot be used, an explicit "leave those rows out"."""

    order_no = forms.CharField(required=False, max_length=100, label="Order number")
    order_date = forms.DateField(required=False, label="Order date", widget=forms.DateInput(attrs={"type": "date"}))
    leave_out = forms.BooleanField(required=False)

    def __init__(self, *args: Any, upload: Upload, groups: list[CustomerGroup], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.upload = upload
        self.groups = groups
        self.sendable = [g for g in groups if g.customer is not None and not g.problem]
        self.held = [g for g in groups if g.problem]
        held_rows = sum(g.rows for g in self.held)
        self.fields[
            "leave_out"
        ].label = f"Leave out the {held_rows} row{'s' if held_rows != 1 else ''} whose customer cannot be used"
        if upload.operation == Upload.Operation.UPLOAD:
            aliases: dict[int, list[str]] = {}
            for customer_pk, name in ProfileAlias.objects.filter(
                customer__in=[g.customer for g in self.sendable]
            ).values_list("customer", "name"):
                aliases.setdefault(customer_pk, []).append(name)
            for g in self.sendable:
                assert g.customer is not None
                names = aliases.get(g.customer.pk, [])
                self.fields[g.field_name] = forms.ChoiceField(
                    required=False,
                    label=f"KME profile alias for {g.customer.name or g.customer.customer_id}",
                    choices=[("", "No KME profile (register only)"), *((n, n) for n in names)],
                    error_messages={
                        "invalid_choice": f"{g.customer.name or g.customer.customer_id} has no KME profile alias "
                        "“%(value)s”; refresh the customer list if it was just created."
                    },
                )
        else:
            del self.fields["order_no"], self.fields["order_date"]

    def alias_fields(self) -> list[tuple[CustomerGroup, Any]]:
        return [(g, self[g.field_name]) for g in self.sendable if g.field_name in self.fields]

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if not self.sendable:
            raise forms.ValidationError(
                "No customer in the file can be used: fix the customer column (or refresh the customer list) and "
                "upload the file again."
            )
        if self.held and not data.get("leave_out"):
            self.add_error(
                "leave_out",
                "Some rows' customer cannot be used (see the list above): tick this to send the others without them, "
                "or fix the file and upload it again.",
            )
        return data

    def order_time(self) -> int | None:
        return _order_time(self.cleaned_data.get("order_date"))

    def targets(self) -> list[Target]:
        parse_job = self.upload.parse_job_id or 0
        return [
            Target(
                g.customer,
                g.rows,
                self.cleaned_data.get(g.field_name, "") if g.field_name in self.fields else "",
                rows={"file_customer": g.texts, "parse_job": parse_job},
            )
            for g in self.sendable
            if g.customer is not None
        ]


class DeviceFilterForm(forms.Form):
    """Filters of the device list; the cleaned values are plain (JSON-safe) so a delete job can store them."""

    SORTS = [("newest", "Newest first"), ("oldest", "Oldest first"), ("identifier", "IMEI / serial")]

    q = forms.CharField(required=False, max_length=20, label="IMEI / serial / MEID starts with")
    account = forms.ModelChoiceField(
        queryset=KnoxAccount.objects.all(), required=False, empty_label="All accounts", widget=QuickSelect
    )
    customer = forms.ModelChoiceField(
        queryset=Customer.objects.all(), required=False, empty_label="All customers", widget=QuickSelect
    )
    state = forms.ChoiceField(required=False, choices=[("", "Any state"), *Device.State.choices], widget=QuickSelect)
    model = forms.CharField(required=False, max_length=60)
    job = forms.IntegerField(required=False, min_value=1, max_value=MAX_ID, label="Job #")
    date_from = FilterDateField(required=False, label="Registered from")
    date_to = FilterDateField(required=False, label="to")
    sort = forms.ChoiceField(required=False, choices=SORTS, widget=QuickSelect)
    after = forms.CharField(required=False, max_length=40)

    def filters(self) -> dict[str, Any]:
        d = self.cleaned_data
        out: dict[str, Any] = {}
        if d.get("q"):
            out["q"] = d["q"]
        if d.get("customer"):
            out["customer"] = d["customer"].pk
        for key in ("state", "model"):
            if d.get(key):
                out[key] = d[key]
        if d.get("job"):
            out["job"] = d["job"]
        for key in ("date_from", "date_to"):
            if d.get(key):
                out[key] = d[key].isoformat()
        return out


def device_id(value: str) -> int:
    """A posted device id; ValueError (shown as an invalid choice) for anything no database id can be."""
    pk = int(value)
    if not 1 <= pk <= MAX_ID:
        raise ValueError(f"{value!r} is not a device id")
    return pk


class DeleteDevicesForm(forms.Form):
    """Delete selected devices (ids) or every registered device matching the current filter."""

    scope = forms.ChoiceField(choices=[("selected", "Selected"), ("matching", "All matching")])
    ids = forms.TypedMultipleChoiceField(coerce=device_id, required=False)
    expected = forms.IntegerField(required=False, min_value=0)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Any id may be posted; the view limits them to the account's registered devices.
        self.fields["ids"].choices = [
            (v, v) for v in (self.data.getlist("ids") if hasattr(self.data, "getlist") else [])
        ]


class ResultsFilterForm(forms.Form):
    outcome = forms.ChoiceField(required=False, choices=[("", "All"), *TransactionDevice.Outcome.choices])
    after = forms.IntegerField(required=False, min_value=0)


class RefreshCustomersForm(forms.Form):
    """A customer refresh asked for from a spreadsheet's preview names the spreadsheet, to return to it."""

    upload = forms.IntegerField(required=False, min_value=1, max_value=MAX_ID)


class AliasesForm(forms.Form):
    customer = forms.ModelChoiceField(queryset=Customer.objects.all())
    profile_alias = forms.CharField(required=False, max_length=200)


class TransactionFilterForm(forms.Form):
    q = forms.CharField(required=False, max_length=40, label="Knox transaction ID starts with")
    before = forms.IntegerField(required=False, min_value=1)


class ReconcileRunForm(ServiceAccountForm):
    def account_service(self, account: KnoxAccount) -> str:
        return account.kdp_service()  # the generation the account is on


class ScheduleForm(ReconcileRunForm):
    hour = daily_hour_field(initial=2)


class ReconcileFilterForm(forms.Form):
    """The differences of one reconcile report: which kind, an identifier prefix, and where the page starts (the
    last row of the previous page, "kind:identifier": the table is ordered by kind, then identifier)."""

    drift = forms.ChoiceField(
        required=False, label="Show", choices=[("", "Every difference"), *ReconcileItem.Drift.choices]
    )
    q = forms.CharField(required=False, max_length=20, label="IMEI / serial starts with")
    after = forms.CharField(required=False, max_length=80)

    def clean_q(self) -> str:
        return self.cleaned_data["q"].strip().upper()

    def clean_after(self) -> tuple[str, str] | None:
        after = self.cleaned_data["after"]
        if not after:
            return None
        drift, _, identifier = after.partition(":")
        if drift not in ReconcileItem.Drift.values or not identifier:
            raise forms.ValidationError("Not a position in the report.")
        return drift, identifier
