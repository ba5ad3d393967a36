"""Email staff when a job they queued ends: the outcome and a link to the job (issue 16).

Why a sweep and not a call where jobs end: every job ends through Job.end_with, and single-device Knox Guard jobs
end inside one SQL statement (guard.single, END_JOB_SET) about a hundred times a second. Sending mail there would
put an SMTP round trip on that path. Instead nothing on it changes: a new job starts with `end_notified` False,
and `notify_ended_jobs`, a django-q2 schedule every minute (migration portal 0014), finds the ended jobs not dealt
with yet (a partial index holds only those), and:

1. marks the ones no one is to be told about as dealt with: a job nobody queued (schedules, the command line
   without a user), a job whose owner has no email address, is inactive or turned the emails off on "My settings",
   and the jobs that answer on the page that asked (reading a spreadsheet into its preview, lookups such as a
   licence check or a connection test);
2. claims each remaining job with a conditional UPDATE (a second sweep running at the same time skips it), and
   sends each owner one email: about the job, or, when several of theirs ended since the last sweep, one email
   listing them all (a bulk of single-device jobs is one email a minute, not one per device);
3. if sending fails, gives the jobs back (end_notified False) so the next sweep tries again, and re-raises so the
   worker logs why.

Development prints the emails on the console (EMAIL_BACKEND); see README "Configuration" for SMTP.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Any

from django.conf import settings
from django.core.mail import send_mail
from django.template.loader import render_to_string
from django.urls import reverse

from portal.models import Job, UserSettings

logger = logging.getLogger(__name__)

# Ended jobs read per round of the sweep; the sweep goes on until none is left.
SWEEP_BATCH = 500
# A digest lists at most this many jobs by name (the rest are counted, and the jobs list has them all).
DIGEST_LIMIT = 20


def needs_no_email(job: Job) -> bool:
    """A job that answers on the page that asked: reading a spreadsheet into its preview, or a lookup."""
    from portal.lookups import LOOKUPS

    return job.reads_file or job.kind in LOOKUPS


def notify_ended_jobs() -> int:
    """One sweep (see the module's docstring); returns how many emails were sent."""
    sent = 0
    while True:
        jobs = list(
            Job.objects.filter(end_notified=False, status__in=Job.FINISHED)
            .select_related("created_by")
            .order_by("id")[:SWEEP_BATCH]
        )
        if not jobs:
            return sent
        opted_out = set(
            UserSettings.objects.filter(
                user_id__in={j.created_by_id for j in jobs if j.created_by_id}, email_on_job_end=False
            ).values_list("user_id", flat=True)
        )
        by_owner: dict[int, list[Job]] = defaultdict(list)
        nobody: list[int] = []
        for job in jobs:
            owner = job.created_by
            if owner is None or not owner.is_active or not owner.email or owner.pk in opted_out or needs_no_email(job):
                nobody.append(job.pk)
            else:
                by_owner[owner.pk].append(job)
        Job.objects.filter(pk__in=nobody).update(end_notified=True)
        for owned in by_owner.values():
            claimed = [j for j in owned if Job.objects.filter(pk=j.pk, end_notified=False).update(end_notified=True)]
            if not claimed:
                continue  # another sweep took them
            try:
                send_job_email(claimed)
            except Exception:
                Job.objects.filter(pk__in=[j.pk for j in claimed]).update(end_notified=False)
                raise
            sent += 1


def send_job_email(jobs: list[Job]) -> None:
    """One email to the owner of `jobs` (all theirs, all ended): about the job, or a list when there are several."""
    owner = jobs[0].created_by
    assert owner is not None
    ctx: dict[str, Any] = {
        "owner": owner,
        "jobs": [(job, settings.PORTAL_URL + job.get_absolute_url()) for job in jobs[:DIGEST_LIMIT]],
        "more": max(0, len(jobs) - DIGEST_LIMIT),
        "settings_url": settings.PORTAL_URL + reverse("portal:my_settings"),
        "jobs_url": settings.PORTAL_URL + reverse("portal:jobs"),
        "time_zone": settings.TIME_ZONE,
    }
    if len(jobs) == 1:
        job = jobs[0]
        subject = f"Job #{job.pk} {job.get_status_display().lower()}: {job.title or job.kind}"
        body = render_to_string("portal/email_job_ended.txt", {**ctx, "job": job, "url": ctx["jobs"][0][1]})
    else:
        subject = f"{len(jobs)} of your jobs ended"
        body = render_to_string("portal/email_jobs_ended.txt", ctx)
    send_mail(" ".join(subject.split())[:200], body, None, [owner.email])  # a title may hold line breaks
    logger.info("emailed %s about %d ended job(s): %s", owner.get_username(), len(jobs), [j.pk for j in jobs])
