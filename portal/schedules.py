"""Daily schedules of a service's job per Knox account (django-q2 Schedule rows), set and removed from its pages.

KDP's daily reconcile (kdp.views.reconcile_schedule) and Knox Guard's daily device sync (guard.views.schedule) are
the same steps with other names: each view passes its task, the schedule's name, its audit action and its words.
"""

from __future__ import annotations

from django.contrib import messages
from django.forms import Form
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import get_object_or_404, redirect
from django_q.models import Schedule

from portal.models import AuditEvent


def unknown_account(form: Form) -> bool:
    """Whether a posted account is missing or not one of the active accounts: the pages only offer those, so
    that is a forged request (400), not a mistake to explain."""
    return form.has_error("account", "invalid_choice") or form.has_error("account", "required")


def form_errors(form: Form) -> str:
    """A form's errors as one sentence for a message."""
    return " ".join(e for errs in form.errors.values() for e in errs)


def schedule_daily(
    request: HttpRequest, form: Form, *, task: str, name_prefix: str, audit_action: str, page: str, done: str
) -> HttpResponse:
    """Run `task` for the form's account every day at the form's hour (UTC), replacing that account's schedule.

    `done` is the success message, formatted with `account` and `hour`; `page` the URL name to go back to.
    """
    if unknown_account(form):
        return HttpResponseBadRequest("Unknown account")  # the page only offers existing accounts
    if not form.is_valid():
        messages.error(request, form_errors(form))
        return redirect(page)
    account, hour = form.cleaned_data["account"], form.cleaned_data["hour"]
    Schedule.objects.update_or_create(
        name=f"{name_prefix}{account.pk}",
        defaults={
            "func": task,
            "args": repr((account.pk,)),
            "schedule_type": Schedule.CRON,
            "cron": f"0 {hour} * * *",
            "repeats": -1,
        },
    )
    AuditEvent.objects.record(audit_action, request=request, target=account, summary={"hour_utc": hour})
    messages.success(request, done.format(account=account, hour=hour))
    return redirect(page)


def remove_schedule(
    request: HttpRequest, pk: int, *, task: str, audit_action: str, page: str, done: str
) -> HttpResponse:
    """Remove the schedule `pk` of `task` (404 for another task's schedule) and audit it by its name."""
    schedule = get_object_or_404(Schedule, pk=pk, func=task)
    AuditEvent.objects.record(audit_action, request=request, summary={"schedule": schedule.name})
    schedule.delete()
    messages.success(request, done)
    return redirect(page)
