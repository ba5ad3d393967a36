"""Daily schedules of a service's job per Knox account (django-q2 Schedule rows), set and removed from its pages.

KDP's daily reconcile (kdp.views.reconcile_schedule) and Knox Guard's daily device sync (guard.views.schedule) are
the same steps with other names: each service declares its DailySchedule, and takes its two views from it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from django.contrib import messages
from django.db.models import QuerySet
from django.forms import Form
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import get_object_or_404, redirect
from django.views.decorators.http import require_POST
from django_q.models import Schedule

from portal.models import AuditEvent


def unknown_account(form: Form) -> bool:
    """Whether a posted account is missing or not one of the active accounts: the pages only offer those, so
    that is a forged request (400), not a mistake to explain."""
    return form.has_error("account", "invalid_choice") or form.has_error("account", "required")


def form_errors(form: Form) -> str:
    """A form's errors as one sentence for a message."""
    return " ".join(e for errs in form.errors.values() for e in errs)


@dataclass(frozen=True)
class DailySchedule:
    """One service's daily job per Knox account: its task, the schedule rows' name (`name_prefix` + the account's
    pk: rows already stored carry it), the page its forms go back to, the audit actions of setting and removing
    it (portal.words names them) and the words that confirm each (`saved` is formatted with account and hour)."""

    task: str
    name_prefix: str
    page: str
    audit: tuple[str, str]
    words: tuple[str, str]
    form: type[Form]  # the account-and-hour form the page posts

    def views(self, perm: str) -> tuple[Callable[..., HttpResponse], Callable[..., HttpResponse]]:
        """The page's two POST views, setting and removing a schedule, each for users holding `perm`."""
        from portal.views import require_perm

        @require_perm(perm)
        @require_POST
        def schedule(request: HttpRequest) -> HttpResponse:
            return self.save(request, self.form(request.POST))

        @require_perm(perm)
        @require_POST
        def unschedule(request: HttpRequest, pk: int) -> HttpResponse:
            return self.remove(request, pk)

        return schedule, unschedule

    def rows(self) -> QuerySet[Schedule]:
        return Schedule.objects.filter(func=self.task).order_by("name")

    def save(self, request: HttpRequest, form: Form) -> HttpResponse:
        """Run the task for the form's account every day at the form's hour (UTC), replacing that account's
        schedule."""
        if unknown_account(form):
            return HttpResponseBadRequest("Unknown account")  # the page only offers existing accounts
        if not form.is_valid():
            messages.error(request, form_errors(form))
            return redirect(self.page)
        account, hour = form.cleaned_data["account"], form.cleaned_data["hour"]
        Schedule.objects.update_or_create(
            name=f"{self.name_prefix}{account.pk}",
            defaults={
                "func": self.task,
                "args": repr((account.pk,)),
                "schedule_type": Schedule.CRON,
                "cron": f"0 {hour} * * *",
                "repeats": -1,
            },
        )
        AuditEvent.objects.record(self.audit[0], request=request, target=account, summary={"hour_utc": hour})
        messages.success(request, self.words[0].format(account=account, hour=hour))
        return redirect(self.page)

    def remove(self, request: HttpRequest, pk: int) -> HttpResponse:
        """Remove the schedule `pk` (404 for another task's schedule) and audit it by its name."""
        schedule = get_object_or_404(Schedule, pk=pk, func=self.task)
        AuditEvent.objects.record(self.audit[1], request=request, summary={"schedule": schedule.name})
        schedule.delete()
        messages.success(request, self.words[1])
        return redirect(self.page)
