from __future__ import annotations

import datetime as dt
from typing import Any

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone

from portal.files import FILE_NAME_MAX_CHARS
from portal.knox.auth import KeysFileError, KnoxKeys, parse_keys_json
from portal.models import Job, KnoxAccount, UploadRow, UserSettings

MAX_KEYS_FILE_BYTES = 64 * 1024
# The largest primary key any of our databases holds (a signed 64-bit integer): a larger number typed into an id
# field would make SQLite raise OverflowError on a lookup that Django does not guard.
MAX_ID = 2**63 - 1
# Dates a list filter accepts. Outside them date arithmetic overflows: "up to 9999-12-31 inclusive" needs the day
# after, and midnight of 0001-01-01 east of UTC is before the first datetime there is.
FILTER_DATE_MIN = dt.date(1970, 1, 1)
FILTER_DATE_MAX = dt.date(2999, 12, 31)


class FilterDateField(forms.DateField):
    """A date for a list filter, between FILTER_DATE_MIN and FILTER_DATE_MAX."""

    widget = forms.DateInput(attrs={"type": "date"})

    def validate(self, value: Any) -> None:
        super().validate(value)
        if value and not FILTER_DATE_MIN <= value <= FILTER_DATE_MAX:
            raise ValidationError(
                f"Enter a date between {FILTER_DATE_MIN.isoformat()} and {FILTER_DATE_MAX.isoformat()}.",
                code="out_of_range",
            )


class FileField(forms.FileField):
    """Every file input of the portal (a test checks that no form uses Django's own): a name longer than
    FILE_NAME_MAX_CHARS is refused with a sentence on the same form.

    The length is the name as the browser sent it, without any folders (`full_name`, kept by the upload handlers
    of portal.files; Django itself cuts `name` to 255 characters).
    """

    def to_python(self, data: Any) -> Any:
        uploaded = super().to_python(data)
        if uploaded is not None:
            length = len(getattr(uploaded, "full_name", None) or uploaded.name)
            if length > FILE_NAME_MAX_CHARS:
                raise ValidationError(
                    f"The file name is {length:,} characters long; rename the file to something shorter "
                    f"(at most {FILE_NAME_MAX_CHARS} characters) and upload it again.",
                    code="name_too_long",
                )
        return uploaded


# What the spreadsheet reader (portal.spreadsheets) opens, by the file's name.
SPREADSHEET_EXTENSIONS = (".xlsx", ".xlsm", ".xls", ".csv", ".txt", ".tsv")


class SpreadsheetField(FileField):
    """A spreadsheet of devices: a name the reader opens, not empty, at most SPREADSHEET_MAX_BYTES; each refused with
    what to do (before the file is stored or read)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(allow_empty_file=True, **kwargs)  # an empty file is explained below, better than Django does

    def clean(self, data: Any, initial: Any = None) -> Any:
        f = super().clean(data, initial)
        if not f:
            return f
        if not f.name.lower().endswith(SPREADSHEET_EXTENSIONS):
            raise ValidationError(
                f"“{f.name}” is not a spreadsheet this portal reads; upload an Excel workbook (.xlsx, .xls) or a CSV file."
            )
        if f.size == 0:
            raise ValidationError("The file is empty (0 bytes); check that you chose the right file.")
        if f.size > settings.SPREADSHEET_MAX_BYTES:
            raise ValidationError(
                f"The file is {f.size / 1048576:.1f} MB; the limit is {settings.SPREADSHEET_MAX_BYTES / 1048576:.0f} MB. "
                "Split it into smaller files."
            )
        return f


def read_keys_file(upload: Any) -> KnoxKeys:
    """Validate an uploaded keys.json; raises ValidationError with the reason in words."""
    if upload.size > MAX_KEYS_FILE_BYTES:
        raise ValidationError("This file is too large to be a keys.json (they are about 2 KB).")
    try:
        return parse_keys_json(upload.read())
    except KeysFileError as e:
        raise ValidationError(str(e)) from None


def _formfield(field: Any, **kwargs: Any) -> Any:
    # Knox hosts are https; say so explicitly rather than rely on Django's changing URLField default.
    if isinstance(field, models.URLField):
        kwargs["assume_scheme"] = "https"
    return field.formfield(**kwargs)


class SecretInput(forms.PasswordInput):
    """Write-only: the current value is never rendered back to the browser."""

    def __init__(self, attrs: dict[str, Any] | None = None) -> None:
        super().__init__(attrs={"autocomplete": "new-password", **(attrs or {})}, render_value=False)


class KnoxAccountForm(forms.ModelForm):
    """Create or edit a Knox account. Secret fields are write-only: leave blank to keep the stored value."""

    client_identifier = forms.CharField(
        label="Client Identifier",
        required=False,
        widget=SecretInput,
        max_length=4000,
        help_text="From the Knox API portal. Leave blank to keep the stored one.",
    )
    keys_file = FileField(
        label="keys.json",
        required=False,
        help_text="As downloaded from the Knox API portal (Private, Public, Identifier).",
    )
    oauth_client_secret = forms.CharField(
        label="OAuth client secret", required=False, widget=SecretInput, max_length=500
    )
    gen1_api_key = forms.CharField(
        label="Gen1 API key (X-WSM-API-TOKEN)", required=False, widget=SecretInput, max_length=500
    )
    efota_client_secret = forms.CharField(
        label="E-FOTA client secret", required=False, widget=SecretInput, max_length=500
    )
    clear_secrets = forms.MultipleChoiceField(
        label="Remove stored secrets",
        required=False,
        choices=[(name, label) for name, label in KnoxAccount.SECRET_LABELS.items()],
        widget=forms.CheckboxSelectMultiple,
    )

    SECRET_INPUTS = ("client_identifier", "oauth_client_secret", "gen1_api_key", "efota_client_secret")
    SECTIONS = (
        (
            "Account",
            ("name", "environment", "region", "kdp_generation", "auth_mode", "reseller_id", "vendor_id", "is_active"),
        ),
        ("Knox Cloud token", ("keys_file", "client_identifier")),
        ("OAuth 2.0 (KDP Gen2)", ("oauth_client_id", "oauth_client_secret", "oauth_scopes")),
        ("KDP Gen1", ("gen1_api_key",)),
        ("E-FOTA", ("efota_client_id", "efota_client_secret", "efota_mdm_id")),
        (
            "Base URL overrides (leave blank for the region's preset)",
            ("kdp_url", "kdp_gen1_url", "guard_url", "efota_url", "auth_url"),
        ),
        ("Remove stored secrets", ("clear_secrets",)),
    )

    def sections(self) -> list[tuple[str, list[Any]]]:
        """The bound fields grouped for display (every field appears exactly once)."""
        return [(title, [self[name] for name in names]) for title, names in self.SECTIONS]

    class Meta:
        model = KnoxAccount
        formfield_callback = _formfield
        fields = [
            "name",
            "environment",
            "region",
            "kdp_generation",
            "auth_mode",
            "reseller_id",
            "vendor_id",
            "kdp_url",
            "kdp_gen1_url",
            "guard_url",
            "efota_url",
            "auth_url",
            "oauth_client_id",
            "oauth_scopes",
            "efota_client_id",
            "efota_mdm_id",
            "is_active",
        ]

    def clean_keys_file(self) -> KnoxKeys | None:
        upload = self.cleaned_data.get("keys_file")
        return read_keys_file(upload) if upload else None

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        generation, auth_mode = data.get("kdp_generation"), data.get("auth_mode")
        if generation == KnoxAccount.Generation.GEN1 and auth_mode not in (None, KnoxAccount.AuthMode.GEN1_KEY):
            # Knox Guard still needs keys.json on a Gen1 account; the auth mode here is KDP's.
            self.add_error("auth_mode", "A KDP Gen1 account authenticates with its static Gen1 key.")
        if generation == KnoxAccount.Generation.GEN2 and auth_mode == KnoxAccount.AuthMode.GEN1_KEY:
            self.add_error("auth_mode", "The Gen1 static key only works with KDP Gen1; pick a Gen2 sign-in method.")
        return data

    def save(self, commit: bool = True) -> KnoxAccount:
        account: KnoxAccount = super().save(commit=False)
        for name in self.cleaned_data.get("clear_secrets") or []:
            account.set_secret(name, "")
        for name in self.SECRET_INPUTS:
            value = (self.cleaned_data.get(name) or "").strip()
            if value:
                account.set_secret(name, value)
        keys = self.cleaned_data.get("keys_file")
        if keys is not None:
            account.set_keys(keys)
        if commit:
            account.save()
        return account

    def changed_summary(self) -> dict[str, Any]:
        """What changed, for the audit log: field names only for secrets, never their values."""
        changed = [f for f in self.changed_data if f not in (*self.SECRET_INPUTS, "keys_file", "clear_secrets")]
        secrets = [f for f in self.SECRET_INPUTS if self.cleaned_data.get(f)]
        if self.cleaned_data.get("keys_file") is not None:
            secrets.append("keys.json")
        # Key names avoid the word "secret": portal.models.scrub() would redact the lists themselves.
        return {
            "fields": changed,
            "credentials_set": secrets,
            "credentials_removed": self.cleaned_data.get("clear_secrets") or [],
        }


class KeysUploadForm(forms.Form):
    keys_file = FileField(label="keys.json")

    def clean_keys_file(self) -> KnoxKeys:
        return read_keys_file(self.cleaned_data["keys_file"])


class ServiceAccountForm(forms.Form):
    """One active Knox account that can call the form's `service` now (a service app's forms name it); another is
    refused with what it still needs (KnoxAccount.cannot_call)."""

    service = ""
    account = forms.ModelChoiceField(queryset=KnoxAccount.objects.filter(is_active=True), label="Knox account")

    def account_service(self, account: KnoxAccount) -> str:
        return self.service

    def clean_account(self) -> KnoxAccount:
        account = self.cleaned_data["account"]
        if problem := account.cannot_call(self.account_service(account)):
            raise forms.ValidationError(problem)
        return account


def daily_hour_field(initial: int) -> forms.IntegerField:
    """The hour (UTC) a daily schedule runs at (portal.schedules.DailySchedule)."""
    return forms.IntegerField(
        min_value=0,
        max_value=23,
        initial=initial,
        label="Daily at (hour, UTC)",
        error_messages={
            k: "Choose an hour between 0 and 23 (UTC)." for k in ("min_value", "max_value", "invalid", "required")
        },
    )


class PreviewFilterForm(forms.Form):
    """Which rows of a staged spreadsheet the preview shows, and where the page starts (row-number cursor)."""

    status = forms.ChoiceField(
        required=False, choices=[("", "All rows"), ("problems", "Problems only"), *UploadRow.Status.choices]
    )
    after = forms.IntegerField(required=False, min_value=0)


class RowFixForm(forms.Form):
    """The suggested value a preview row's "Use ..." button posts; it must still be the row's suggestion."""

    value = forms.CharField(max_length=40)


class JobFilterForm(forms.Form):
    kind = forms.CharField(required=False, max_length=40)
    status = forms.ChoiceField(required=False, choices=[("", "Any status"), *Job.Status.choices])
    q = forms.CharField(required=False, max_length=200, label="Title contains")
    # The keyset cursor: the id of the last job of the previous page (never OFFSET: fast at a million jobs).
    before = forms.IntegerField(required=False, min_value=1, max_value=MAX_ID, widget=forms.HiddenInput)


class LookupForm(forms.Form):
    """The lookup a page is opened on (`?job=<pk>`, portal.lookups), after a POST without JavaScript."""

    job = forms.IntegerField(required=False, min_value=1, max_value=MAX_ID)


class JobPollForm(forms.Form):
    """The polling cursor: the job version the browser last saw."""

    v = forms.IntegerField(required=False, min_value=0)


class AuditFilterForm(forms.Form):
    actor = forms.CharField(required=False, max_length=150, label="Who")
    action = forms.CharField(required=False, max_length=64)
    date_from = FilterDateField(required=False, label="From")
    date_to = FilterDateField(required=False, label="To")
    q = forms.CharField(required=False, max_length=200, label="Target")
    before = forms.IntegerField(required=False, min_value=1, max_value=MAX_ID, widget=forms.HiddenInput)

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if data.get("date_from") and data.get("date_to") and data["date_from"] > data["date_to"]:
            self.add_error("date_to", "The end date is before the start date.")
        return data

    def bounds(self) -> tuple[dt.datetime | None, dt.datetime | None]:
        """The date range as aware datetimes: [start of date_from, start of the day after date_to)."""
        tz = timezone.get_current_timezone()
        start = self.cleaned_data.get("date_from")
        end = self.cleaned_data.get("date_to")
        return (
            dt.datetime.combine(start, dt.time.min, tz) if start else None,
            dt.datetime.combine(end + dt.timedelta(days=1), dt.time.min, tz) if end else None,
        )


class UserSettingsForm(forms.ModelForm):
    """The "My settings" page: what a staff member chooses for themselves."""

    class Meta:
        model = UserSettings
        fields = ["email_on_job_end"]
