"""Knox Guard forms. Every request input passes through one of these, including filters and cursors.

Action parameters are checked by `guard.client.validate` (seed 003's rules, in words) from the forms' clean(),
so the pages, the queue and the client all refuse the same things with the same sentences.
"""

from __future__ import annotations

from typing import Any, cast

from django import forms

from guard.client import ACTIONS, ActionParams, ActionSpec, GuardValidationError, validate
from guard.constants import (
    KG_APPROVE_COMMENT_MAX_LENGTH,
    KG_APPROVE_ID_MAX_LENGTH,
    KG_BLINK_INTERVAL_MAX,
    KG_BLINK_INTERVAL_MIN,
    KG_CONSOLE_LABELS,
    KG_DEVICE_STATES,
    KG_MESSAGE_MAX_LENGTH,
)
from guard.models import GuardAction
from portal.forms import MAX_ID, ServiceAccountForm, SpreadsheetField, daily_hour_field
from portal.models import KnoxAccount
from portal.widgets import QuickSelect

# A prefix this short would match most of a million devices; the search is for finding one phone.
SEARCH_MIN_LENGTH = 4

# The console's words (seed 003), as staff know them; the value stays the API's spelling (it is what is stored).
STATE_CHOICES = [(s, KG_CONSOLE_LABELS[s]) for s in KG_DEVICE_STATES]

# Upload flags of POST devices/uploads, with what each one does (knox-api.md §4.8).
UPLOAD_FLAGS = {
    "autoAccept": (
        "Accept automatically",
        "The devices skip the Pending step: Knox Guard accepts them without an approve.",
    ),
    "autoLock": (
        "Lock automatically",
        "Knox Guard applies its automatic lock policy to these devices: phones can lock without a lock action here.",
    ),
    "applySimControl": (
        "Apply SIM control",
        "The account's SIM control policy applies: the phone restricts SIM cards the policy does not allow.",
    ),
    "enableBlockFactoryReset": (
        "Block factory reset",
        "The phone's user cannot factory-reset the device while Knox Guard manages it.",
    ),
}


def guard_accounts() -> list[KnoxAccount]:
    """Active accounts that can call Knox Guard right now."""
    return [a for a in KnoxAccount.objects.filter(is_active=True) if not a.missing_credentials("guard")]


def _guard_account_field(**kwargs: Any) -> forms.ModelChoiceField:
    return forms.ModelChoiceField(queryset=KnoxAccount.objects.none(), label="Knox account", **kwargs)


# --- lists ---------------------------------------------------------------------------------------------------


class DeviceFilterForm(forms.Form):
    """Filters of the device list; `filters()` is what GuardDevice.objects.matching() takes."""

    q = forms.CharField(required=False, max_length=50, label="IMEI / serial / approve ID starts with")
    account = forms.ModelChoiceField(
        queryset=KnoxAccount.objects.all(), required=False, empty_label="All accounts", widget=QuickSelect
    )
    state = forms.ChoiceField(required=False, choices=[("", "Any state"), *STATE_CHOICES], widget=QuickSelect)
    licence = forms.CharField(required=False, max_length=100)
    approve_id = forms.CharField(required=False, max_length=KG_APPROVE_ID_MAX_LENGTH, label="Approve ID")
    after = forms.IntegerField(required=False, min_value=1)

    def clean_q(self) -> str:
        q = self.cleaned_data["q"].strip()
        if q and len(q) < SEARCH_MIN_LENGTH:
            raise forms.ValidationError(
                f"Type at least {SEARCH_MIN_LENGTH} characters of the IMEI, serial or approve ID."
            )
        return q

    def filters(self) -> dict[str, Any]:
        return {k: self.cleaned_data[k] for k in ("q", "state", "licence", "approve_id") if self.cleaned_data.get(k)}


# A selection posts its ids: more than a few pages of them is what “all matching this filter” is for.
MAX_SELECTED = 500


def _device_id(value: str) -> int:
    if not str(value).isdigit() or not 0 < int(value) <= MAX_ID:  # a database id: 64 bits at most
        raise forms.ValidationError("not a device")
    return int(value)


class DeviceSelectionForm(forms.Form):
    """An action on the device list's selection: the ticked rows (`ids`), or every device matching the list's
    filter (the filter's own fields travel with it, read by DeviceFilterForm)."""

    scope = forms.ChoiceField(choices=[("selected", "The selected devices"), ("matching", "All matching the filter")])
    ids = forms.TypedMultipleChoiceField(coerce=_device_id, required=False)
    action = forms.ChoiceField(choices=[(a.name, a.label) for a in ACTIONS.values()])

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Any id may be posted; the view keeps the ones the portal has (and the filter matches).
        posted = self.data.getlist("ids") if hasattr(self.data, "getlist") else []
        self.fields["ids"].choices = [(v, v) for v in posted]

    @property
    def spec(self) -> ActionSpec:
        return ACTIONS[self.cleaned_data["action"]]

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if data.get("scope") == "selected":
            ids = data.get("ids") or []
            if not ids:
                raise forms.ValidationError("Tick at least one device, or choose “all matching the filter”.")
            if len(ids) > MAX_SELECTED:
                raise forms.ValidationError(
                    f"At most {MAX_SELECTED} devices can be ticked at once; use “all matching the filter” for more."
                )
        return data


class ResultsFilterForm(forms.Form):
    outcome = forms.ChoiceField(required=False, choices=[("", "All"), *GuardAction.Outcome.choices])
    after = forms.IntegerField(required=False, min_value=0)


# --- actions -------------------------------------------------------------------------------------------------


class ActionChoiceForm(forms.Form):
    action = forms.ChoiceField(choices=[(a.name, a.label) for a in ACTIONS.values()])

    @property
    def spec(self) -> ActionSpec:
        return ACTIONS[self.cleaned_data["action"]]


WEEKDAYS = [
    (0, "Sunday"),
    (1, "Monday"),
    (2, "Tuesday"),
    (3, "Wednesday"),
    (4, "Thursday"),
    (5, "Friday"),
    (6, "Saturday"),
]


def _int_field(label: str, **attrs: Any) -> forms.IntegerField:
    # Ranges are checked by guard.client.validate, which says what the range is and why.
    return forms.IntegerField(required=False, label=label, widget=forms.NumberInput(attrs=attrs))


class ActionForm(forms.Form):
    """The parameters of one action. Only the fields the action uses exist; clean() runs guard.client.validate
    and puts each of its sentences on the field it concerns."""

    message = forms.CharField(
        required=False,
        label="Message shown on the phone",
        help_text=f"At most {KG_MESSAGE_MAX_LENGTH} characters. The phone's user reads exactly this.",
        widget=forms.Textarea(attrs={"rows": 3, "maxlength": KG_MESSAGE_MAX_LENGTH}),
    )
    email = forms.CharField(required=False, max_length=254, label="Contact email", widget=forms.EmailInput())
    tel = forms.CharField(
        required=False,
        max_length=40,
        label="Contact phone",
        help_text="Give a phone number, an email address or both: the user needs a way to reach you.",
        widget=forms.TextInput(attrs={"type": "tel"}),
    )
    interval = _int_field("Repeat every (seconds)", min=KG_BLINK_INTERVAL_MIN, max=KG_BLINK_INTERVAL_MAX)
    # The blink's quiet period, in seed 003's two forms (guard.client.quiet_flags): the same hours every day, or
    # from a day and hour to a day and hour.
    quiet = forms.ChoiceField(
        required=False,
        label="Quiet period",
        choices=[
            ("none", "None"),
            ("daily", "The same hours every day"),
            ("span", "From a day and hour to a day and hour"),
        ],
        widget=forms.RadioSelect,
    )
    time_limit_from = _int_field("Quiet hours from", min=0, max=23, **{"aria-label": "Quiet every day from hour"})
    time_limit_to = _int_field("to", min=0, max=23, **{"aria-label": "Quiet every day to hour"})
    days_limit_from = forms.TypedChoiceField(
        required=False,
        label="From",
        choices=[("", "—"), *WEEKDAYS],
        coerce=int,
        empty_value=None,
        widget=forms.Select(attrs={"aria-label": "Quiet from day"}),
    )
    span_from_hour = _int_field("at hour", min=0, max=23, **{"aria-label": "Quiet from hour (that day)"})
    days_limit_to = forms.TypedChoiceField(
        required=False,
        label="to",
        choices=[("", "—"), *WEEKDAYS],
        coerce=int,
        empty_value=None,
        widget=forms.Select(attrs={"aria-label": "Quiet to day"}),
    )
    span_to_hour = _int_field("at hour", min=0, max=23, **{"aria-label": "Quiet to hour (that day)"})
    approve_id = forms.CharField(
        required=False,
        label="Approve ID",
        help_text=f"Optional, at most {KG_APPROVE_ID_MAX_LENGTH} characters, unique: usually the loan or contract number.",
        widget=forms.TextInput(attrs={"maxlength": KG_APPROVE_ID_MAX_LENGTH}),
    )
    approve_comment = forms.CharField(
        required=False,
        label="Comment",
        help_text=f"Optional, at most {KG_APPROVE_COMMENT_MAX_LENGTH:,} characters.",
        widget=forms.Textarea(attrs={"rows": 2, "maxlength": KG_APPROVE_COMMENT_MAX_LENGTH}),
    )

    MESSAGE_FIELDS = ("message", "email", "tel")
    BLINK_FIELDS = (
        "interval",
        "quiet",
        "time_limit_from",
        "time_limit_to",
        "days_limit_from",
        "span_from_hour",
        "days_limit_to",
        "span_to_hour",
    )
    APPROVE_FIELDS = ("approve_id", "approve_comment")
    # validate() names ActionParams fields; the pair fields are shown on their first box.
    ERROR_FIELDS = {"time_limit": "time_limit_from", "days_limit": "days_limit_from"}

    def __init__(self, *args: Any, action: str, **kwargs: Any) -> None:
        kwargs.setdefault("auto_id", f"id_{action}_%s")  # several action forms share one page
        super().__init__(*args, **kwargs)
        self.spec = ACTIONS[action]
        keep: set[str] = set(self.extra_fields())
        if self.spec.uses_message:
            keep.update(self.MESSAGE_FIELDS)
        if action == "blink":
            keep.update(self.BLINK_FIELDS)
        if action == "approve":
            keep.update(self.APPROVE_FIELDS)
        for name in list(self.fields):
            if name not in keep:
                del self.fields[name]

    def extra_fields(self) -> tuple[str, ...]:
        return ()

    @property
    def action(self) -> str:
        return self.spec.name

    def param_fields(self) -> list[forms.BoundField]:
        """The parameter fields, for templates (without the subclasses' own fields)."""
        return [self[name] for name in self.fields if name not in self.extra_fields()]

    @staticmethod
    def _mode(data: dict[str, Any]) -> str:
        """The quiet period chosen; when the form was posted without a choice (the command line, an old page), what
        was filled in says it: days mean a day-and-hour span, hours alone the same hours every day."""
        chosen = data.get("quiet") or ""
        if chosen:
            return chosen
        if data.get("days_limit_from") is not None or data.get("days_limit_to") is not None:
            return "span"
        return "daily" if data.get("time_limit_from") is not None or data.get("time_limit_to") is not None else "none"

    def _quiet_period(self, data: dict[str, Any]) -> dict[str, tuple[int, int] | None]:
        mode = self._mode(data)
        if mode == "daily":
            return {
                "time_limit": self._pair(data.get("time_limit_from"), data.get("time_limit_to")),
                "days_limit": None,
            }
        if mode == "span":
            from_hour, to_hour = data.get("span_from_hour"), data.get("span_to_hour")
            if from_hour is None and to_hour is None:  # posted without a choice: the hours are the plain ones
                from_hour, to_hour = data.get("time_limit_from"), data.get("time_limit_to")
            return {
                "time_limit": self._pair(from_hour, to_hour),
                "days_limit": self._pair(data.get("days_limit_from"), data.get("days_limit_to")),
            }
        return {"time_limit": None, "days_limit": None}

    @staticmethod
    def _pair(a: int | None, b: int | None) -> tuple[int, int] | None:
        if a is None and b is None:
            return None
        # One value alone is passed on as it is: validate() says the quiet period needs exactly two values.
        return cast("tuple[int, int]", tuple(v for v in (a, b) if v is not None))

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if any(name in self._errors for name in self.fields if name not in self.extra_fields()):
            return data  # a value that is not a number: already explained on its field
        params = ActionParams(
            message=data.get("message", ""),
            email=data.get("email", "").strip(),
            tel=data.get("tel", "").strip(),
            interval=data.get("interval"),
            **self._quiet_period(data),
            approve_id=data.get("approve_id", "").strip(),
            approve_comment=data.get("approve_comment", ""),
        )
        if self.action != "blink":
            params.interval = params.time_limit = params.days_limit = None
        try:
            validate(self.action, params)
        except GuardValidationError as e:
            span = data.get("quiet") == "span"
            for name, sentence in e.errors.items():
                field = "span_from_hour" if span and name == "time_limit" else self.ERROR_FIELDS.get(name, name)
                self.add_error(field if field in self.fields else None, sentence)
        self.params = params
        return data


def typed_confirmation(action: str, count: int) -> str:
    """What staff type to confirm `action` on `count` devices (“LOCK 10”), or "" when the action needs none
    (ActionSpec.typed_confirmation: lock, complete, delete)."""
    return f"{action.upper()} {count}" if ACTIONS[action].typed_confirmation else ""


class TypedConfirmationMixin:
    """The typed confirmation of every path that locks, completes or deletes devices: the bulk preview, the device
    page, a selection on the device list and “Retry the failed devices”. One field, one check, one sentence.

    `count` is the number of devices that will be sent, so typing it shows staff read it. The typed text is
    recorded in the audit event (guard.models.queue_action)."""

    fields: dict[str, forms.Field]
    cleaned_data: dict[str, Any]

    def add_confirmation(self, action: str, count: int) -> None:
        self.expected = typed_confirmation(action, count)
        field = forms.CharField(required=False, max_length=40, label="Confirmation")
        if self.expected:
            field.label = f"Type {self.expected} to confirm"
            field.widget.attrs.update({"autocomplete": "off", "spellcheck": "false"})
        self.fields["confirmation"] = field

    def clean_confirmation(self) -> str:
        typed = self.cleaned_data["confirmation"].strip()
        if self.expected and typed != self.expected:
            if not typed:
                raise forms.ValidationError(f"Type {self.expected} to confirm: it acts on real phones.")
            raise forms.ValidationError(
                f"You typed “{typed}”; type exactly {self.expected} (the action and the number of devices) to confirm."
            )
        return typed


class ConfirmedActionForm(TypedConfirmationMixin, ActionForm):
    """An action's parameters and, where the action needs one, the typed confirmation for `count` devices."""

    def __init__(self, *args: Any, action: str, count: int, **kwargs: Any) -> None:
        super().__init__(*args, action=action, **kwargs)
        self.count = count
        self.add_confirmation(action, count)

    def extra_fields(self) -> tuple[str, ...]:
        return ("confirmation",)


class BulkActionForm(ConfirmedActionForm):
    """An action on a staged spreadsheet's rows (or a selection of the device list): `count` is how many of them
    will be sent."""

    def __init__(self, *args: Any, action: str, count: int, **kwargs: Any) -> None:
        super().__init__(*args, action=action, count=count, **kwargs)
        # An approve ID is unique per device: one typed here cannot be given to every row of a spreadsheet.
        self.fields.pop("approve_id", None)


class RetryForm(TypedConfirmationMixin, forms.Form):
    """“Retry the failed devices” of an action job: the typed confirmation for the devices the retry sends."""

    def __init__(self, *args: Any, action: str, count: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.spec = ACTIONS[action]
        self.count = count
        self.add_confirmation(action, count)


class UploadFlagsForm(forms.Form):
    # Knox's own spellings, so the POST names, the job's params and the request body all read the same.
    autoAccept = forms.BooleanField(required=False)
    autoLock = forms.BooleanField(required=False)
    applySimControl = forms.BooleanField(required=False)
    enableBlockFactoryReset = forms.BooleanField(required=False)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for name, (label, help_text) in UPLOAD_FLAGS.items():
            self.fields[name].label = label
            self.fields[name].help_text = help_text

    def flags(self) -> dict[str, bool]:
        return {name: bool(self.cleaned_data.get(name)) for name in UPLOAD_FLAGS}


# --- files ---------------------------------------------------------------------------------------------------


class StagingForm(forms.Form):
    """A spreadsheet for a Knox Guard account (bulk action or upload to Knox Guard)."""

    file = SpreadsheetField(
        label="Spreadsheet",
        help_text="Excel (.xlsx, .xls) or CSV; one device per row: IMEI or serial number, optionally Approve ID.",
    )
    account = _guard_account_field(empty_label=None)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["account"].queryset = KnoxAccount.objects.filter(pk__in=[a.pk for a in guard_accounts()])


class UploadToGuardForm(StagingForm, UploadFlagsForm):
    """The spreadsheet and the four policy flags (shown again, still editable, before confirming)."""


# --- accounts and schedules -----------------------------------------------------------------------------------


class AccountForm(ServiceAccountForm):
    service = "guard"


class ScheduleForm(AccountForm):
    hour = daily_hour_field(initial=3)
