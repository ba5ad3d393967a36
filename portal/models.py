"""Portal-wide models: Knox accounts with their encrypted credentials, user-visible jobs, the append-only audit
log, the shared rate-limit slots and the role permissions."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import IntegrityError, connections, models, router, transaction
from django.db.models import F
from django.utils import timezone

from portal import crypto
from portal.knox import hosts
from portal.workers import LeaseLost, check_lease

if TYPE_CHECKING:
    from django.http import HttpRequest

    from portal.knox.auth import KnoxKeys


class PortalPermissions(models.Model):
    """Holds the portal's role permissions; no table. Views check these codenames (portal.<codename>)."""

    class Meta:
        managed = False
        default_permissions = ()
        permissions = [
            ("access_portal", "Can see the portal (every read-only page)"),
            ("queue_jobs", "Can queue KDP, Knox Guard and E-FOTA actions"),
            ("control_guard_devices", "Can lock, unlock, complete and delete Knox Guard devices"),
            ("manage_accounts", "Can manage Knox accounts and their credentials"),
        ]

    def __str__(self) -> str:
        return "portal permissions"


# The services an account calls (KnoxAccount.missing_credentials), in the words staff read.
SERVICE_LABELS = {"kdp": "KDP", "kdp_gen1": "KDP", "guard": "Knox Guard", "efota": "E-FOTA"}


class KnoxAccount(models.Model):
    """One set of Knox credentials and the hosts they are used against.

    Secrets live only in the `*_enc` columns, encrypted with `portal.crypto`; read them with `secret(name)` and
    write them with `set_secret(name, value)`. Nothing renders them back: forms and the admin treat them as
    write-only and show only whether each one is set.
    """

    class Region(models.TextChoices):
        EU = "eu", "EU"
        US = "us", "US"

    class Environment(models.TextChoices):
        PRODUCTION = "production", "Production"
        INTEGRATION = "integration", "Integration (Samsung test servers)"
        SANDBOX = "sandbox", "Local Knox sandbox"

    class Generation(models.TextChoices):
        GEN2 = "gen2", "Gen2 (x-knox-apitoken / OAuth)"
        GEN1 = "gen1", "Gen1 (static X-WSM-API-TOKEN)"

    class AuthMode(models.TextChoices):
        KNOX_TOKEN = "knox_token", "Knox Cloud token (keys.json + Client Identifier)"
        OAUTH = "oauth", "OAuth 2.0 client credentials"
        GEN1_KEY = "gen1_key", "Gen1 static key (X-WSM-API-TOKEN)"

    # name -> column holding its ciphertext
    SECRET_FIELDS = {
        "private_key": "private_key_enc",
        "client_identifier": "client_identifier_enc",
        "oauth_client_secret": "oauth_client_secret_enc",
        "gen1_api_key": "gen1_api_key_enc",
        "efota_client_secret": "efota_client_secret_enc",
    }
    SECRET_LABELS = {
        "private_key": "keys.json private key",
        "client_identifier": "Client Identifier",
        "oauth_client_secret": "OAuth client secret",
        "gen1_api_key": "Gen1 API key",
        "efota_client_secret": "E-FOTA client secret",
    }

    name = models.CharField(max_length=100, unique=True)
    region = models.CharField(max_length=2, choices=Region.choices, default=Region.EU)
    environment = models.CharField(max_length=12, choices=Environment.choices, default=Environment.PRODUCTION)
    kdp_generation = models.CharField(
        "KDP generation", max_length=4, choices=Generation.choices, default=Generation.GEN2
    )
    auth_mode = models.CharField(max_length=12, choices=AuthMode.choices, default=AuthMode.KNOX_TOKEN)
    reseller_id = models.CharField("reseller ID", max_length=50, blank=True)
    vendor_id = models.CharField("vendor ID", max_length=50, blank=True, help_text="Two-tier provisioning only.")

    # Blank means "the preset for this region and environment" (portal/knox/hosts.py).
    kdp_url = models.URLField("KDP Gen2 base URL", blank=True)
    kdp_gen1_url = models.URLField("KDP Gen1 base URL", blank=True)
    guard_url = models.URLField("Knox Guard base URL", blank=True)
    efota_url = models.URLField("E-FOTA base URL", blank=True)
    auth_url = models.URLField("Auth base URL", blank=True)

    # Public halves of the credentials: safe to show.
    public_key = models.TextField(blank=True, help_text="keys.json Public (base64 SubjectPublicKeyInfo).")
    key_identifier = models.CharField(max_length=100, blank=True, help_text="keys.json Identifier.")
    oauth_client_id = models.CharField("OAuth client ID", max_length=200, blank=True)
    oauth_scopes = models.CharField(
        "OAuth scopes", max_length=300, blank=True, default="kdp.devices kdp.profilealias kdp.customers"
    )
    efota_client_id = models.CharField("E-FOTA client ID", max_length=200, blank=True)
    efota_mdm_id = models.CharField("E-FOTA mdmId", max_length=50, blank=True)

    # Ciphertexts (Fernet). Never rendered, never logged.
    private_key_enc = models.TextField(blank=True, editable=False)
    client_identifier_enc = models.TextField(blank=True, editable=False)
    oauth_client_secret_enc = models.TextField(blank=True, editable=False)
    gen1_api_key_enc = models.TextField(blank=True, editable=False)
    efota_client_secret_enc = models.TextField(blank=True, editable=False)
    # Bumped whenever a secret changes, so cached Knox tokens minted from the old credentials are not reused.
    credentials_version = models.PositiveIntegerField(default=1, editable=False)

    is_active = models.BooleanField(default=True)
    last_test_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_test_ok = models.BooleanField(null=True, editable=False)
    last_test_message = models.TextField(blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    # --- secrets ---------------------------------------------------------------------------------------------

    def set_secret(self, name: str, value: str) -> None:
        """Encrypt and store `value` (an empty value clears the secret). The caller saves."""
        column = self.SECRET_FIELDS[name]
        setattr(self, column, crypto.encrypt(value) if value else "")
        self.credentials_version = (self.credentials_version or 0) + 1

    def secret(self, name: str) -> str:
        ciphertext = getattr(self, self.SECRET_FIELDS[name])
        return crypto.decrypt(ciphertext) if ciphertext else ""

    def has_secret(self, name: str) -> bool:
        return bool(getattr(self, self.SECRET_FIELDS[name]))

    def secrets_status(self) -> list[tuple[str, bool]]:
        """(label, is set) pairs for display; never the values."""
        return [(self.SECRET_LABELS[name], self.has_secret(name)) for name in self.SECRET_FIELDS]

    def set_keys(self, keys: KnoxKeys) -> None:
        """Store a validated keys.json (see portal.knox.auth.parse_keys_json)."""
        self.set_secret("private_key", keys.private_b64)
        self.public_key = keys.public_b64
        self.key_identifier = keys.identifier

    def keys(self) -> KnoxKeys | None:
        from portal.knox.auth import KnoxKeys

        if not self.has_secret("private_key") or not self.public_key:
            return None
        return KnoxKeys(
            private_b64=self.secret("private_key"), public_b64=self.public_key, identifier=self.key_identifier
        )

    def rotate_secrets(self) -> int:
        """Re-encrypt every stored secret with the current encryption key; returns how many were rewritten."""
        n = 0
        for column in self.SECRET_FIELDS.values():
            ciphertext = getattr(self, column)
            if ciphertext:
                setattr(self, column, crypto.rotate(ciphertext))
                n += 1
        return n

    # --- hosts and capabilities -------------------------------------------------------------------------------

    def base_url(self, service: str) -> str:
        override = getattr(self, hosts.OVERRIDE_FIELDS[service], "") if service in hosts.OVERRIDE_FIELDS else ""
        if override:
            return override.rstrip("/")
        return hosts.preset(self.environment, self.region, service, auth_mode=self.auth_mode)

    def missing_credentials(self, service: str) -> list[str]:
        """What must still be configured before `service` can be called, in words (empty when ready)."""
        missing: list[str] = []
        needs_keys = (service == "guard") or (service == "kdp" and self.auth_mode == self.AuthMode.KNOX_TOKEN)
        if service == "kdp" and self.kdp_generation == self.Generation.GEN1:
            return ["This account uses KDP Gen1: use the Gen1 API, not Gen2"]
        if service == "kdp_gen1":
            if self.kdp_generation != self.Generation.GEN1:
                return ["This account uses KDP Gen2; Gen1 calls are not allowed (Samsung: never mix generations)"]
            if not self.has_secret("gen1_api_key"):
                missing.append("the Gen1 API key (X-WSM-API-TOKEN)")
        if needs_keys:
            if not self.has_secret("private_key") or not self.public_key:
                missing.append("keys.json (upload it on the account page)")
            if not self.has_secret("client_identifier"):
                missing.append("the Client Identifier")
        oauth = service == "kdp" and self.auth_mode == self.AuthMode.OAUTH
        if oauth and (not self.oauth_client_id or not self.has_secret("oauth_client_secret")):
            missing.append("the OAuth client ID and secret")
        if service == "efota":
            if not self.efota_client_id or not self.has_secret("efota_client_secret"):
                missing.append("the E-FOTA client ID and secret")
            if not self.efota_mdm_id:
                missing.append("the E-FOTA mdmId")
        if service in ("kdp", "kdp_gen1") and not self.reseller_id:
            missing.append("the reseller ID")
        return missing

    def kdp_service(self) -> str:
        return "kdp_gen1" if self.kdp_generation == self.Generation.GEN1 else "kdp"

    def cannot_call(self, service: str) -> str:
        """Why this account cannot call `service` yet, or "" when it can: what every page and form that queues a
        job says before queueing one that could only fail."""
        missing = self.missing_credentials(service)
        return f"{self} cannot call {SERVICE_LABELS[service]} yet: it needs {', '.join(missing)}." if missing else ""

    def record_test(self, ok: bool, message: str) -> None:
        self.last_test_at = timezone.now()
        self.last_test_ok = ok
        self.last_test_message = message[:2000]
        self.save(update_fields=["last_test_at", "last_test_ok", "last_test_message", "updated_at"])


class JobQuerySet(models.QuerySet["Job"]):
    def unfinished(self) -> JobQuerySet:
        return self.filter(status__in=(Job.Status.QUEUED, Job.Status.RUNNING))

    def knox_jobs(self) -> JobQuerySet:
        """Jobs that act on or read from Knox: every kind except reading a spreadsheet into the preview."""
        return self.exclude(kind__endswith=Job.READ_FILE_SUFFIX)

    def files_read(self) -> JobQuerySet:
        """Jobs that read a spreadsheet into the preview (`Upload.start_parsing`); they never call Knox."""
        return self.filter(kind__endswith=Job.READ_FILE_SUFFIX)

    def stale(self) -> JobQuerySet:
        """Running jobs whose worker stopped renewing its lease (killed, crashed, host lost)."""
        return self.filter(status=Job.Status.RUNNING, lease_until__lt=timezone.now())

    def failed_deliveries(self) -> JobQuerySet:
        """Queued jobs whose last task ended in an error before a worker claimed them: django-q2 keeps the failed
        task (its id is the job's task_id) and will not deliver it again."""
        from django_q.models import Task

        failed = Task.objects.filter(success=False, id__in=self.filter(status=Job.Status.QUEUED).values("task_id"))
        return self.filter(status=Job.Status.QUEUED, task_id__in=failed.values("id")).exclude(func="")


# Job.end_with's statement, in parts: guard.single ends a job with them inside the one statement that also records
# its device's outcome (PostgreSQL). Parameters: Job.end_params().
END_JOB_SET = (
    '"status" = %s, "error_summary" = %s, "finished_at" = %s, "heartbeat_at" = %s, "lease_owner" = \'\', '
    '"lease_until" = NULL, "waiting_since" = NULL, "waiting_reason" = \'\', "next_try_at" = NULL, '
    '"version" = "version" + 1, "succeeded" = "succeeded" + %s, "failed" = "failed" + %s'
)
# END_JOB_WHERE (one placeholder per finished status) follows the Job class, which defines them.


def lease_seconds() -> int:
    """A job's lease lasts this long without a renewal. A live worker renews it from a thread of its own while a
    Knox call is in flight (portal.workers.LeaseRenewer), so it need not outlast the slowest call: it bounds how
    long a dead worker's job waits before another host resumes it."""
    return settings.JOB_LEASE_SECONDS


# What the progress of a job that is not a lookup counts, when not devices (kind -> label, e.g. "Customers"):
# registered by the service apps in AppConfig.ready, as lookups are.
PROGRESS_UNITS: dict[str, str] = {}


class Job(models.Model):
    """User-visible background work. The UI polls this row (never django-q2's tables).

    Exactly one worker works on a job at a time: it must `claim()` a lease first and keep renewing it with
    `heartbeat()`. A worker that dies stops renewing; `portal.tasks.resume_stale_jobs` (a django-q2 schedule)
    then queues the job's task again, and the new worker resumes from what is recorded.

    Counters change through `add_progress()` with F() expressions so several workers can report at once, and
    every change bumps `version`, the cursor the polling fragment uses to answer 204 when nothing moved.
    """

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        PARTIAL = "partial", "Partially failed"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"
        # A job that read a spreadsheet the portal could not use (no device column, no valid row, unreadable):
        # nothing was sent to Knox, so it is not a failed Knox job. The reason is its error_summary.
        REFUSED = "refused", "File refused"

    FINISHED = (Status.SUCCEEDED, Status.PARTIAL, Status.FAILED, Status.CANCELLED, Status.REFUSED)
    # The kind of a job that reads a spreadsheet ends with this (kdp.parse, guard.parse: Upload.start_parsing).
    READ_FILE_SUFFIX = ".parse"
    # How long a lease lasts without a heartbeat: settings.JOB_LEASE_SECONDS (see lease_seconds()).

    kind = models.CharField(max_length=40, help_text="What the job does, e.g. kdp.upload or guard.lock.")
    title = models.CharField(max_length=200, blank=True)
    account = models.ForeignKey(KnoxAccount, models.PROTECT, null=True, blank=True, related_name="jobs")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, models.SET_NULL, null=True, blank=True, related_name="+")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    total = models.PositiveIntegerField(default=0)
    succeeded = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    params = models.JSONField(default=dict, blank=True, help_text="Inputs of the job (never secrets).")
    # What a job that reads from Knox found (a licence, a firmware list, a connection test), for its page to show.
    result = models.JSONField(null=True, blank=True)
    # The job this one retries. Unique: a failed set is retried once, so a double click or a replayed POST finds
    # the existing retry instead of sending the same devices to Knox again (job_one_retry_uniq).
    retry_of = models.ForeignKey("self", models.SET_NULL, null=True, blank=True, related_name="retries")
    error_summary = models.TextField(blank=True)
    func = models.CharField(max_length=100, blank=True, help_text="Dotted path of the task that runs the job.")
    task_id = models.CharField(max_length=64, blank=True)
    lease_owner = models.CharField(max_length=32, blank=True)
    lease_until = models.DateTimeField(null=True, blank=True)
    version = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    # Knox stopped answering (portal.engine.Outage): since when, why, and when the job tries again. Cleared when
    # Knox answers; the job's page shows them live.
    waiting_since = models.DateTimeField(null=True, blank=True)
    waiting_reason = models.CharField(max_length=300, blank=True)
    next_try_at = models.DateTimeField(null=True, blank=True)
    # False until portal.notify has dealt with the job's end (emailed whoever queued it, or found no one to tell).
    # Nothing on the path that ends a job touches it: the every-minute sweep finds ended jobs by it.
    end_notified = models.BooleanField("end emailed (or no email needed)", default=False, editable=False)

    objects = JobQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            # The jobs list (newest first, optionally by kind) and the dashboard's "recent jobs".
            models.Index(fields=["kind", "-created_at"], name="job_kind_created_idx"),
            # resume_stale_jobs scans running jobs by lease expiry.
            models.Index(fields=["status", "lease_until"], name="job_status_lease_idx"),
            # portal.notify's sweep: only the jobs whose end is not dealt with yet (a handful) are in it.
            models.Index(fields=["id"], condition=models.Q(end_notified=False), name="job_end_not_notified_idx"),
        ]
        constraints = [
            # Job.create_retry relies on it: at most one retry per job, whoever clicks and however often.
            models.UniqueConstraint(fields=["retry_of"], name="job_one_retry_uniq"),
        ]

    def __str__(self) -> str:
        return f"Job #{self.pk} {self.title or self.kind}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        # Titles quote what users typed or uploaded (a file name can be 255 characters): cut, never refused.
        self.title = self.title[: Job._meta.get_field("title").max_length]
        super().save(*args, **kwargs)

    def get_absolute_url(self) -> str:
        """A lookup's page (portal.lookups), else the service app's job page when it has one (kdp:job, guard:job,
        ...), else the generic page."""
        from django.urls import NoReverseMatch, reverse

        from portal.lookups import LOOKUPS

        if self.kind in LOOKUPS:
            return LOOKUPS[self.kind].page(self)
        try:
            return reverse(f"{self.kind.split('.')[0]}:job", args=[self.pk])
        except NoReverseMatch:
            return reverse("portal:job_detail", args=[self.pk])

    @property
    def kind_label(self) -> str:
        """What the job does, in words ("KDP: register devices"); `kind` keeps the code."""
        from portal.words import kind_label

        return kind_label(self.kind)

    @property
    def processed(self) -> int:
        return self.succeeded + self.failed

    @property
    def percent(self) -> int:
        if self.is_finished and self.status != self.Status.CANCELLED:
            return 100
        if not self.total:
            return 0
        return min(100, int(100 * self.processed / self.total))

    @property
    def is_finished(self) -> bool:
        return self.status in self.FINISHED

    @property
    def progress_unit(self) -> str:
        """What the progress counters count: devices, or what a lookup says ("" when a lookup is one call)."""
        from portal.lookups import LOOKUPS

        lookup = LOOKUPS.get(self.kind)
        if lookup is not None:
            return lookup.unit
        return "Rows" if self.reads_file else PROGRESS_UNITS.get(self.kind, "Devices")

    @property
    def reads_file(self) -> bool:
        """A job that reads a spreadsheet into the preview (never calls Knox)."""
        return self.kind.endswith(self.READ_FILE_SUFFIX)

    def set_result(self, result: Any) -> None:
        """Store what a job that reads from Knox found (JSON-able), before it ends: the page renders it then."""
        Job.objects.filter(pk=self.pk).update(result=result, version=F("version") + 1)
        self.result = result

    def enqueue(self, func: str) -> None:
        """Queue `func(job_pk)` on django-q2 once the surrounding transaction commits (rule F2)."""
        if self.func != func:
            self.func = func
            Job.objects.filter(pk=self.pk).update(func=func)
        transaction.on_commit(lambda: self.send())

    def send(self) -> None:
        """Hand the job's task to the queue now (used by enqueue() and by resume_stale_jobs)."""
        from django_q.tasks import async_task

        # save=False: a successful task's result is not stored (the Job row is the record; a failed one still is,
        # for failed_deliveries()). Storing it made django-q2 lock and read its last Q_SAVE_LIMIT results each time.
        name = f"job-{self.pk}-{timezone.now():%H%M%S%f}"
        task_id = async_task(self.func, self.pk, task_name=name, group=self.kind, save=False)
        Job.objects.filter(pk=self.pk).update(task_id=task_id or "")

    def claim(self, owner: str) -> bool:
        """Take the job's lease for worker `owner`. False when it is finished or another worker holds it."""
        now = timezone.now()
        n = (
            Job.objects.filter(pk=self.pk, status__in=(self.Status.QUEUED, self.Status.RUNNING))
            .filter(models.Q(lease_until__isnull=True) | models.Q(lease_until__lt=now) | models.Q(lease_owner=owner))
            .update(**Job.lease_fields(owner, now))
        )
        if n != 1:
            self.refresh_from_db()  # who holds it, or how it ended
            return False
        self.hold(owner, now)
        return True

    @staticmethod
    def claim_unclaimed(jobs: list[Job], owner: str) -> list[Job]:
        """Claim for `owner`, in one statement, those of `jobs` that are still queued and were never claimed (a worker
        taking several small jobs at once: guard.single.drain); each is then held exactly as `claim` holds one.
        Returns them, oldest first, with the lease set on the instances too."""
        by_pk = {job.pk: job for job in jobs}
        now = timezone.now()
        unclaimed = Job.objects.filter(pk__in=list(by_pk), status=Job.Status.QUEUED, lease_until__isnull=True)
        if not unclaimed.update(**Job.lease_fields(owner, now)):
            return []
        held = Job.objects.filter(pk__in=list(by_pk), lease_owner=owner).values_list("pk", flat=True)
        claimed = [by_pk[pk] for pk in sorted(held)]
        for job in claimed:
            job.hold(owner, now)
        return claimed

    @staticmethod
    def lease_fields(owner: str, now: Any) -> dict[str, Any]:
        """What a claim writes: running, held by `owner` for a lease from `now`."""
        return {
            "status": Job.Status.RUNNING,
            "lease_owner": owner,
            "lease_until": now + timedelta(seconds=lease_seconds()),
            "started_at": models.functions.Coalesce(F("started_at"), models.Value(now)),
            "heartbeat_at": now,
            "version": F("version") + 1,
        }

    def hold(self, owner: str, now: Any) -> None:
        """Set on this instance what a successful claim wrote, rather than read it back: one statement fewer per
        job (single-device Guard jobs run at up to 100/s)."""
        self.status, self.lease_owner, self.heartbeat_at = self.Status.RUNNING, owner, now
        self.lease_until, self.started_at = now + timedelta(seconds=lease_seconds()), self.started_at or now
        self.version += 1

    def held_elsewhere(self) -> bool:
        """As loaded: running under another worker's lease that has not run out. Such a job is left alone without
        trying to claim it (a claim is a write; a worker draining jobs makes this the common case)."""
        return self.status == self.Status.RUNNING and bool(self.lease_until and self.lease_until > timezone.now())

    def heartbeat(self, owner: str) -> None:
        """Renew the lease; raise LeaseLost if another worker has taken the job over."""
        check_lease()
        if not Job.renew_lease(self.pk, owner):
            raise LeaseLost(f"job {self.pk} is no longer held by this worker")

    @staticmethod
    def renew_lease(pk: int, owner: str) -> bool:
        """Extend `owner`'s lease on job `pk` by a full lease; False when `owner` no longer holds it."""
        now = timezone.now()
        n = Job.objects.filter(pk=pk, lease_owner=owner, status=Job.Status.RUNNING).update(
            lease_until=now + timedelta(seconds=lease_seconds()), heartbeat_at=now
        )
        return n == 1

    def wait_for_knox(self, reason: str, *, since: datetime, next_try_at: datetime) -> None:
        """Record that the job is waiting for Knox to come back (portal.engine.Outage)."""
        Job.objects.filter(pk=self.pk).update(
            waiting_since=since, waiting_reason=reason[:300], next_try_at=next_try_at, version=F("version") + 1
        )
        self.waiting_since, self.waiting_reason, self.next_try_at = since, reason[:300], next_try_at

    def knox_back(self) -> None:
        """Knox answered again: the job is no longer waiting."""
        Job.objects.filter(pk=self.pk).update(
            waiting_since=None, waiting_reason="", next_try_at=None, version=F("version") + 1
        )
        self.waiting_since, self.waiting_reason, self.next_try_at = None, "", None

    def set_total(self, total: int) -> None:
        Job.objects.filter(pk=self.pk).update(total=total, version=F("version") + 1)
        self.total = total

    def add_progress(self, succeeded: int = 0, failed: int = 0) -> None:
        Job.objects.filter(pk=self.pk).update(
            succeeded=F("succeeded") + succeeded,
            failed=F("failed") + failed,
            heartbeat_at=timezone.now(),
            version=F("version") + 1,
        )

    def finish(self, error_summary: str = "") -> None:
        """End a running job; its final status follows from the counters."""
        self.refresh_from_db(fields=["succeeded", "failed", "total"])
        if self.failed == 0 and not error_summary:
            status = self.Status.SUCCEEDED
        elif self.succeeded == 0:
            status = self.Status.FAILED
        else:
            status = self.Status.PARTIAL
        self._end(status, error_summary)

    def fail(self, error_summary: str) -> None:
        """End the job as failed with a reason the user can act on."""
        self._end(self.Status.FAILED, error_summary)

    def refuse(self, reason: str) -> None:
        """End a job that read a spreadsheet the portal refused (Upload.Status.REFUSED), with the reason."""
        self._end(self.Status.REFUSED, reason)

    def _end(self, status: str, error_summary: str) -> None:
        self.end_with(status, error_summary=error_summary)

    def end_with(self, status: str, *, succeeded: int = 0, failed: int = 0, error_summary: str = "") -> bool:
        """End the job as `status`, adding `succeeded`/`failed` to its counters, in one statement (so a worker can
        record a device's outcome and end its job in one transaction). False when it had already ended."""
        check_lease()  # only the lease holder ends a running job
        now = timezone.now()
        # Plain SQL: every job ends here, single-device Guard jobs ~100 times a second, and compiling the ORM's
        # UPDATE cost more CPU than running it.
        with connections[router.db_for_write(Job)].cursor() as cursor:
            cursor.execute(_END_JOB, self.end_params(status, succeeded, failed, error_summary, now))
            n = cursor.rowcount
        if n != 1:
            self.refresh_from_db()  # ended elsewhere: show how
            return False
        self.ended(status, succeeded, failed, error_summary, now)
        return True

    def end_params(self, status: str, succeeded: int, failed: int, error_summary: str, now: Any) -> list[Any]:
        """The parameters of END_JOB_SET and END_JOB_WHERE, in order."""
        at = connections[router.db_for_write(Job)].ops.adapt_datetimefield_value(now)
        return [status, error_summary[:5000], at, at, succeeded, failed, self.pk, *self.FINISHED]

    def ended(self, status: str, succeeded: int, failed: int, error_summary: str, now: Any) -> None:
        """Set on this instance what END_JOB_SET wrote, rather than read it back."""
        self.status, self.error_summary, self.finished_at, self.heartbeat_at = status, error_summary[:5000], now, now
        self.lease_owner, self.lease_until, self.version = "", None, self.version + 1
        self.waiting_since, self.waiting_reason, self.next_try_at = None, "", None
        self.succeeded, self.failed = self.succeeded + succeeded, self.failed + failed

    def create_retry(self, **fields: Any) -> tuple[Job, bool]:
        """The job that retries this one's failed devices, created at most once (job_one_retry_uniq).

        Returns (the retry, True) when this call created it, and (the existing retry, False) when another click,
        a replayed POST or a concurrent request got there first: a failed set is sent to Knox again once, and a
        device a retry has handled is never sent again by a retry of an older job. Retry the retry instead.
        """
        existing = Job.objects.filter(retry_of=self).first()
        if existing is not None:
            return existing, False
        try:
            with transaction.atomic():
                return Job.objects.create(retry_of=self, **fields), True
        except IntegrityError:
            return Job.objects.get(retry_of=self), False

    def cancel(self) -> bool:
        """Cancel a job that no worker has started yet. Returns False when it is already running or finished."""
        n = Job.objects.filter(pk=self.pk, status=self.Status.QUEUED).update(
            status=self.Status.CANCELLED, finished_at=timezone.now(), version=F("version") + 1
        )
        self.refresh_from_db()
        return n == 1


END_JOB_WHERE = '"id" = %s AND "status" NOT IN (' + ", ".join(["%s"] * len(Job.FINISHED)) + ")"  # not finished
_END_JOB = f'UPDATE "portal_job" SET {END_JOB_SET} WHERE {END_JOB_WHERE}'  # noqa: S608 - constant text


# Keys whose values never reach an audit summary, whatever the caller passes.
_SECRET_KEY_RE = re.compile(
    r"secret|passw|private|token|api_?key|apikey|client_?identifier|authori[sz]ation|cookie", re.I
)
REDACTED = "[redacted]"


def scrub(value: Any) -> Any:
    """Replace the values of secret-looking keys, recursively."""
    if isinstance(value, dict):
        return {k: (REDACTED if _SECRET_KEY_RE.search(str(k)) else scrub(v)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub(v) for v in value]
    return value


class AppendOnlyError(Exception):
    pass


class AuditQuerySet(models.QuerySet["AuditEvent"]):
    def update(self, **kwargs: Any) -> int:
        raise AppendOnlyError("The audit log is append-only")

    def delete(self) -> tuple[int, dict[str, int]]:
        raise AppendOnlyError("The audit log is append-only")


class AuditManager(models.Manager["AuditEvent"]):
    def get_queryset(self) -> AuditQuerySet:
        return AuditQuerySet(self.model, using=self._db)

    def record(
        self,
        action: str,
        *,
        request: HttpRequest | None = None,
        actor: Any = None,
        target: models.Model | None = None,
        summary: dict[str, Any] | None = None,
    ) -> AuditEvent:
        """Append one event. `summary` is scrubbed of anything that looks like a secret."""
        if actor is None and request is not None and request.user.is_authenticated:
            actor = request.user
        from portal.net import client_ip

        ip = client_ip(request) or None
        return self.create(
            actor=actor if actor is not None and getattr(actor, "pk", None) else None,
            actor_name=(actor.get_username() if actor is not None and hasattr(actor, "get_username") else "system"),
            action=action,
            target_type=target._meta.label_lower if target is not None else "",
            target_id=str(target.pk) if target is not None else "",
            target_repr=str(target)[:200] if target is not None else "",
            summary=scrub(summary or {}),
            ip=ip,
        )


class AuditEvent(models.Model):
    """Append-only record of who did what. Rows are never changed or removed through the ORM or the admin."""

    created_at = models.DateTimeField(default=timezone.now)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, models.SET_NULL, null=True, blank=True, related_name="+")
    # Kept so the log still names the person after their user is deleted.
    actor_name = models.CharField(max_length=150)
    action = models.CharField(max_length=64)
    target_type = models.CharField(max_length=64, blank=True)
    target_id = models.CharField(max_length=64, blank=True)
    target_repr = models.CharField(max_length=200, blank=True)
    summary = models.JSONField(default=dict, blank=True)
    ip = models.GenericIPAddressField("IP address", null=True, blank=True)

    objects = AuditManager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            # The audit page: newest first, filtered by action or actor, or a target's timeline.
            models.Index(fields=["-created_at"], name="audit_created_idx"),
            models.Index(fields=["action", "-created_at"], name="audit_action_created_idx"),
            models.Index(fields=["actor", "-created_at"], name="audit_actor_created_idx"),
            models.Index(fields=["target_type", "target_id"], name="audit_target_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.actor_name} {self.action} {self.target_repr}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise AppendOnlyError("Audit events cannot be changed")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        raise AppendOnlyError("Audit events cannot be deleted")

    @property
    def action_label(self) -> str:
        """What happened, in words ("KDP spreadsheet uploaded"); `action` keeps the code."""
        from portal.words import action_label

        return action_label(self.action)

    def details(self) -> list[tuple[str, str]]:
        """The summary as labelled plain values, for the audit page and the admin."""
        from portal.words import summary_items

        return summary_items(self.summary)


class UserSettings(models.Model):
    """A staff member's own choices, edited on their "My settings" page. A user without a row has the defaults."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, models.CASCADE, related_name="portal_settings")
    email_on_job_end = models.BooleanField(
        "Email me when a job I queued ends",
        default=True,
        help_text="One email per job with its outcome and a link; several jobs ending together come as one email.",
    )

    class Meta:
        verbose_name = "user settings"
        verbose_name_plural = "user settings"

    def __str__(self) -> str:
        return f"settings of {self.user}"

    @classmethod
    def for_user(cls, user: Any) -> UserSettings:
        """The user's settings, unsaved defaults when they never changed any."""
        found = cls.objects.filter(user=user).first()
        return found if found is not None else cls(user=user)


class RateLimitSlot(models.Model):
    """Shared pacing state for one (account, service): the earliest time the next request may be sent.

    Used by portal.knox.ratelimit when no Redis is configured. One row per key; every process reserves a send
    time with a single conditional UPDATE inside a transaction, so N workers together keep the Knox limit.
    """

    key = models.CharField(max_length=200, unique=True)
    next_free = models.FloatField(default=0.0)

    def __str__(self) -> str:
        return self.key


# The stored file's name is the browser's, cut to this many bytes: file systems allow 255 per name, and a name of
# multi-byte characters (CJK) reaches that long before Django's 300-character limit. The full name is kept in
# Upload.filename for display.
UPLOAD_NAME_MAX_BYTES = 100


def upload_path(instance: models.Model, filename: str) -> str:
    stem, dot, ext = filename.rpartition(".")
    if not dot:
        stem, ext = filename, ""
    ext = ext[:10]
    stem = stem.encode()[:UPLOAD_NAME_MAX_BYTES].decode("utf-8", "ignore") or "upload"
    return timezone.now().strftime("uploads/%Y/%m/") + stem + (f".{ext}" if ext else "")


class Upload(models.Model):
    """A spreadsheet staff uploaded, staged for preview: its rows are read once into UploadRow (by the
    `portal.tasks.parse_upload` job), then a service app (kdp, guard) turns the valid rows into its own job.

    Shared by every service so there is one reader, one preview and one set of checks; a service adds its own
    checks against local records through `portal.uploads.ROW_CHECKS`.
    """

    class Operation(models.TextChoices):
        UPLOAD = "upload", "Register devices"
        DELETE = "delete", "Delete devices"
        GUARD_ACTION = "guard", "Knox Guard action"
        GUARD_UPLOAD = "guard-upload", "Upload to Knox Guard"

    class Status(models.TextChoices):
        PARSING = "parsing", "Reading the file"
        READY = "ready", "Ready for review"
        REFUSED = "refused", "File refused"
        SUBMITTED = "submitted", "Submitted"

    service = models.CharField(max_length=10, default="kdp", help_text="The app that acts on the rows (kdp, guard).")
    account = models.ForeignKey(KnoxAccount, models.PROTECT, related_name="uploads")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, models.SET_NULL, null=True, related_name="+")
    operation = models.CharField(max_length=12, choices=Operation.choices, default=Operation.UPLOAD)
    filename = models.CharField(max_length=255)
    file = models.FileField(upload_to=upload_path, max_length=300)
    sheet = models.CharField(max_length=100, blank=True)
    device_column = models.CharField(max_length=200, blank=True)
    allow_bad_check_digit = models.BooleanField(default=False)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PARSING)
    error = models.TextField(blank=True, help_text="Why the file was refused, in words.")
    notices = models.JSONField(default=list, blank=True)
    sheets = models.JSONField(default=list, blank=True)
    columns = models.JSONField(default=list, blank=True, help_text="Candidate device columns [header text].")
    rows_total = models.PositiveIntegerField(default=0)
    valid = models.PositiveIntegerField(default=0)
    invalid = models.PositiveIntegerField(default=0)
    duplicate = models.PositiveIntegerField(default=0)
    skipped = models.PositiveIntegerField(default=0)
    conflicts = models.PositiveIntegerField(default=0, help_text="Valid in form but refused by local records.")
    parse_job = models.ForeignKey(Job, models.SET_NULL, null=True, blank=True, related_name="+")
    job = models.ForeignKey(Job, models.SET_NULL, null=True, blank=True, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    # Set (and `file` emptied) when portal.cleanup deletes the spreadsheet after UPLOAD_RETENTION_DAYS; this row and
    # its staged rows stay, and the pages say when the file went.
    file_deleted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["service", "-created_at"], name="upload_service_created_idx")]

    def __str__(self) -> str:
        return f"{self.filename} ({self.get_operation_display().lower()})"

    @property
    def problems(self) -> int:
        return self.invalid + self.duplicate + self.conflicts

    def read_rows(self) -> models.QuerySet[UploadRow]:
        """The staged rows, once the file was read. While the upload is PARSING its rows are being written (or the
        earlier ones deleted) in batches, and none is shown (portal.uploads.stage_upload)."""
        if self.status == Upload.Status.PARSING:
            return UploadRow.objects.none()
        return UploadRow.objects.filter(upload=self)

    def start_parsing(self, user: Any) -> Job:
        """Queue the job that reads the file into rows (the preview polls it)."""
        job = Job.objects.create(
            kind=f"{self.service}.parse",
            title=f"Read {self.filename}",
            account=self.account,
            created_by=user,
            params={"upload": self.pk},
        )
        Upload.objects.filter(pk=self.pk).update(parse_job=job, status=Upload.Status.PARSING)
        self.parse_job, self.status = job, Upload.Status.PARSING
        job.enqueue("portal.tasks.parse_upload")
        return job

    @property
    def file_deleted_notice(self) -> str:
        """What the pages say once the spreadsheet was deleted (portal.cleanup), or ""."""
        if self.file_deleted_at is None:
            return ""
        day = timezone.localtime(self.file_deleted_at).date().isoformat()
        return (
            f"The original file was deleted on {day} after the retention period; the rows read from it are kept. "
            "To read another sheet or column, upload the file again."
        )

    def mark_submitted(self, job: Job) -> None:
        """Link the job that acts on the rows; raises ValueError unless the upload was READY (submit once)."""
        if (
            Upload.objects.filter(pk=self.pk, status=Upload.Status.READY).update(
                status=Upload.Status.SUBMITTED, job=job
            )
            != 1
        ):
            raise ValueError("This spreadsheet was already submitted or is not ready.")
        self.status, self.job = Upload.Status.SUBMITTED, job


class UploadRow(models.Model):
    class Status(models.TextChoices):
        VALID = "valid", "Valid"
        INVALID = "invalid", "Invalid"
        DUPLICATE = "duplicate", "Duplicate in file"
        SKIPPED = "skipped", "Empty, skipped"
        # A service's checks against the portal's own records: not submitted.
        REGISTERED = "registered", "Already registered"
        IN_FLIGHT = "inflight", "Another job is handling it"
        UNKNOWN = "unknown", "Not in the portal's records"

    CONFLICTS = (Status.REGISTERED, Status.IN_FLIGHT, Status.UNKNOWN)

    # No index of its own: uprow_number_idx (upload, row_number) serves every lookup by upload, and each index
    # costs every one of a 100,000-row upload's inserts.
    upload = models.ForeignKey(Upload, models.CASCADE, related_name="rows", db_index=False)
    row_number = models.PositiveIntegerField()
    raw = models.CharField(max_length=100, blank=True)
    value = models.CharField(max_length=40, blank=True)
    kind = models.CharField(max_length=6, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices)
    reason = models.CharField(max_length=400, blank=True)
    suggestion = models.CharField(max_length=40, blank=True)
    order_no = models.CharField(max_length=100, blank=True)
    model = models.CharField(max_length=60, blank=True)
    approve_id = models.CharField(max_length=100, blank=True)

    class Meta:
        ordering = ["row_number"]
        indexes = [
            # The preview table filters by status and pages by row number.
            models.Index(fields=["upload", "status", "row_number"], name="uprow_status_idx"),
            models.Index(fields=["upload", "row_number"], name="uprow_number_idx"),
        ]

    def __str__(self) -> str:
        return f"row {self.row_number}: {self.raw}"
