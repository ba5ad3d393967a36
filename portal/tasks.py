"""Running jobs in django-q2 workers: the lease-holding wrapper every job task uses, and the schedule that
resumes jobs whose worker died."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from django.db import OperationalError

from portal.knox.errors import KnoxError
from portal.models import Job, LeaseLost, lease_seconds
from portal.workers import check_lease, held_lease, new_owner

logger = logging.getLogger(__name__)

JobWork = Callable[[Job, str], None]


def run_job(job_pk: int, work: JobWork) -> None:
    """Claim job `job_pk` and run `work(job, owner)` under its lease.

    1. A finished job, or one another live worker holds, is left alone (duplicate deliveries are harmless).
    2. `work` calls `job.heartbeat(owner)` as it goes and ends the job itself (finish/fail). While it runs, a
       LeaseRenewer thread renews the lease, so a Knox call slower than the lease does not let another worker
       take the job over; if one does (this worker's database connection was gone for a whole lease), this
       worker sends nothing more to Knox.
    3. A Knox failure that escapes `work` (Knox unreachable after bounded retries, credentials refused) ends
       the job as failed with Knox's explanation: the reason is the job's record, nothing is lost.
    4. Anything unexpected also ends the job as failed, then is re-raised so the worker logs the traceback
       (style rule F6: never swallow exceptions in workers).
    """
    job = Job.objects.get(pk=job_pk)
    if job.is_finished:
        return
    owner = new_owner()
    if job.held_elsewhere() or not _claim(job, owner):
        logger.info("job %s is held by another worker; this delivery does nothing", job_pk)
        return
    run_claimed(job, owner, work)


def run_claimed(job: Job, owner: str, work: JobWork) -> None:
    """Steps 2-4 of run_job for a job `owner` has just claimed (guard.single claims more jobs as it goes)."""
    job_pk = job.pk
    lease = held_lease(job.pk, owner, lease_seconds())
    try:
        with lease:
            work(job, owner)
            if not job.is_finished:  # a job `work` ended was ended under the lease (Job.end_with checks it)
                check_lease()  # a worker whose job was taken over does not end it either
    except LeaseLost:
        logger.warning("job %s was taken over by another worker; stopping here", job_pk)
    except KnoxError as e:
        if lease.lost:
            logger.warning("job %s was taken over by another worker; stopping here (%s)", job_pk, e)
            return
        logger.warning("job %s failed: %s", job_pk, e)
        job.fail(str(e))
    except Exception as e:
        if not lease.lost:
            job.fail(
                f"Internal error ({type(e).__name__}); the details are in the worker log. Nothing further was sent."
            )
        raise
    else:
        if not job.is_finished:  # else `work` ended it through this object: nothing to read back
            job.refresh_from_db()
        if not job.is_finished:
            job.finish()


# How often a claim is tried again when the database is busy, and for how long in all.
CLAIM_ATTEMPTS = 5
CLAIM_BACKOFF_SECONDS = 2.0


def _claim(job: Job, owner: str) -> bool:
    """Job.claim, tried again for a while when the database is locked (SQLite) or briefly unreachable: a busy
    database must delay a job, never drop it. If it stays busy, the error ends this delivery and the
    every-minute `resume_stale_jobs` delivers the job again."""
    for attempt in range(1, CLAIM_ATTEMPTS + 1):
        try:
            return job.claim(owner)
        except OperationalError as e:
            if attempt == CLAIM_ATTEMPTS:
                raise
            logger.warning("job %s: could not claim it (%s); trying again", job.pk, e)
            time.sleep(CLAIM_BACKOFF_SECONDS * attempt)
    return False


# A queued job whose deliveries failed this many times (its worker could not even claim it) is ended as failed,
# with the reason, instead of being delivered again every minute for ever.
MAX_FAILED_DELIVERIES = 5


def resume_stale_jobs() -> int:
    """Queue again (1) every running job whose lease expired (its worker was killed or lost), and (2) every queued
    job whose delivery failed before a worker could claim it (the database was unreachable or locked, so the
    task ended in an error and django-q2 will not deliver it again). Runs on a schedule (migration portal 0005)
    and is safe to run at any time: a job still held by a live worker is skipped by `claim()`."""
    n = 0
    for job in Job.objects.stale().exclude(func=""):
        logger.warning("job %s (%s) lost its worker; queueing it again to resume", job.pk, job.kind)
        job.send()
        n += 1
    for job in Job.objects.failed_deliveries():
        failures = int(job.params.get("failed_deliveries", 0)) + 1
        if failures > MAX_FAILED_DELIVERIES:
            job.fail(
                f"No worker could start this job ({MAX_FAILED_DELIVERIES} attempts failed, see the worker log); "
                "nothing was sent to Knox. Queue it again."
            )
            continue
        Job.objects.filter(pk=job.pk).update(params={**job.params, "failed_deliveries": failures})
        logger.warning("job %s (%s): its delivery failed before it started; queueing it again", job.pk, job.kind)
        job.send()
        n += 1
    return n


def parse_upload(job_pk: int) -> None:
    """Read a staged spreadsheet into rows (any service's upload); the preview page polls this job."""
    run_job(job_pk, _parse)


def _parse(job: Job, owner: str) -> None:
    from portal.models import Upload
    from portal.uploads import stage_upload

    upload = Upload.objects.select_related("account").get(pk=job.params["upload"])
    stage_upload(upload, job=job, owner=owner)
    job.set_total(upload.rows_total)
    job.add_progress(succeeded=upload.rows_total)
    if upload.status == Upload.Status.REFUSED:
        job.refuse(upload.error)  # a file the portal could not use: not a failed Knox job
    else:
        job.finish()


def notify_ended_jobs() -> str:
    """Email staff about the jobs they queued that ended (portal.notify). Runs every minute (migration portal
    0014)."""
    from portal.notify import notify_ended_jobs as sweep

    return f"sent {sweep()} emails"


def cleanup_uploads() -> str:
    """Delete spreadsheet files past UPLOAD_RETENTION_DAYS, orphaned media files and stale temporary files
    (portal.cleanup). Runs hourly (schedule: migration portal 0011)."""
    from portal.cleanup import clean_up

    report = clean_up()
    return f"deleted {len(report.deleted)} files, {report.size()} bytes"
