"""Running jobs in django-q2 workers: the lease-holding wrapper every job task uses, and the schedule that
resumes jobs whose worker died."""

from __future__ import annotations

import logging
from collections.abc import Callable

from portal.knox.errors import KnoxError
from portal.models import Job, LeaseLost
from portal.workers import new_owner

logger = logging.getLogger(__name__)

JobWork = Callable[[Job, str], None]


def run_job(job_pk: int, work: JobWork) -> None:
    """Claim job `job_pk` and run `work(job, owner)` under its lease.

    1. A finished job, or one another live worker holds, is left alone (duplicate deliveries are harmless).
    2. `work` calls `job.heartbeat(owner)` as it goes and ends the job itself (finish/fail).
    3. A Knox failure that escapes `work` (Knox unreachable after bounded retries, credentials refused) ends
       the job as failed with Knox's explanation: the reason is the job's record, nothing is lost.
    4. Anything unexpected also ends the job as failed, then is re-raised so the worker logs the traceback
       (style rule F6: never swallow exceptions in workers).
    """
    job = Job.objects.get(pk=job_pk)
    if job.is_finished:
        return
    owner = new_owner()
    if not job.claim(owner):
        logger.info("job %s is held by another worker; this delivery does nothing", job_pk)
        return
    try:
        work(job, owner)
    except LeaseLost:
        logger.warning("job %s was taken over by another worker; stopping here", job_pk)
    except KnoxError as e:
        logger.warning("job %s failed: %s", job_pk, e)
        job.fail(str(e))
    except Exception as e:
        job.fail(f"Internal error ({type(e).__name__}); the details are in the worker log. Nothing further was sent.")
        raise
    else:
        job.refresh_from_db()
        if not job.is_finished:
            job.finish()


def resume_stale_jobs() -> int:
    """Queue again every running job whose lease expired (its worker was killed or lost). Runs on a schedule
    (migration portal 0005) and is safe to run at any time: a job still held by a live worker is skipped by
    `claim()`."""
    n = 0
    for job in Job.objects.stale().exclude(func=""):
        logger.warning("job %s (%s) lost its worker; queueing it again to resume", job.pk, job.kind)
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
        job.fail(upload.error)
    else:
        job.finish()


def cleanup_uploads() -> str:
    """Delete spreadsheet files past UPLOAD_RETENTION_DAYS, orphaned media files and stale temporary files
    (portal.cleanup). Runs hourly (schedule: migration portal 0011)."""
    from portal.cleanup import clean_up

    report = clean_up()
    return f"deleted {len(report.deleted)} files, {report.size()} bytes"
