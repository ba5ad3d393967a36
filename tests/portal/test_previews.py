"""The view helpers every service shares (issue 18): staging a spreadsheet and answering for its preview
(portal.previews), a daily schedule per account (portal.schedules), the job lookup (portal.views) and
pages of a list (portal.lists)."""

from __future__ import annotations

import pytest
from django import forms
from django.contrib.messages import get_messages
from django.contrib.messages.storage.fallback import FallbackStorage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.http import Http404
from django.test import RequestFactory
from django.urls import reverse
from django_htmx.middleware import HtmxDetails
from django_q.models import Schedule

from portal import previews
from portal.lists import cut_page
from portal.models import AuditEvent, Job, KnoxAccount, Upload
from portal.previews import preview_response, stage_spreadsheet
from portal.schedules import DailySchedule
from portal.views import follow_up, get_job_for_user, queued, refused, retried
from tests.base import make_user

pytestmark = pytest.mark.django_db


class HourForm(forms.Form):
    account = forms.ModelChoiceField(KnoxAccount.objects.filter(is_active=True))
    hour = forms.IntegerField(min_value=0, max_value=23, error_messages={"max_value": "Choose an hour up to 23."})


NIGHTLY = DailySchedule(
    "tests.portal.test_previews.nightly",
    "Nightly: account ",
    page="portal:dashboard",
    audit=("test.nightly_schedule", "test.nightly_unschedule"),
    words=("{account} runs every day at {hour:02d}:00 UTC.", "Nightly run removed."),
    form=HourForm,
)


@pytest.fixture
def user():
    return make_user("olivia")


@pytest.fixture
def account():
    return KnoxAccount.objects.create(name="Acme Mobile")


def ready_account() -> KnoxAccount:
    ready = KnoxAccount(name="Ready", environment=KnoxAccount.Environment.SANDBOX, auth_mode=KnoxAccount.AuthMode.OAUTH)
    ready.oauth_client_id, ready.reseller_id = "portal-tests", "4612345678"
    ready.set_secret("oauth_client_secret", "not-a-real-secret")
    ready.save()
    return ready


def request_for(user, data=None, *, htmx_target: str | None = None):
    """A POST (or a GET without data) as the middleware would leave it: user, messages and htmx details."""
    factory = RequestFactory()
    headers = {"HX-Request": "true", "HX-Target": htmx_target} if htmx_target else {}
    request = factory.post("/", data) if data is not None else factory.get("/", headers=headers)
    request.user = user
    request.session = {}
    request._messages = FallbackStorage(request)
    request.htmx = HtmxDetails(request)
    return request


def words(request) -> list[str]:
    return [str(m) for m in get_messages(request)]


# --- staging and the preview ------------------------------------------------------------------------------------


def test_staging_stores_the_file_for_its_service_starts_reading_it_and_audits_it(user, account, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    file = SimpleUploadedFile("devices.csv", b"IMEI\n356938035643809\n")
    staged = stage_spreadsheet(
        request_for(user, {}), file, service="guard", account=account, operation=Upload.Operation.GUARD_ACTION
    )
    staged.refresh_from_db()
    assert (staged.service, staged.operation, staged.filename) == (
        "guard",
        Upload.Operation.GUARD_ACTION,
        "devices.csv",
    )
    assert staged.created_by == user and staged.status == Upload.Status.PARSING
    assert staged.parse_job.kind == "guard.parse"
    event = AuditEvent.objects.get(action="guard.file_upload")
    assert event.summary == {"file": "devices.csv", "bytes": file.size, "operation": Upload.Operation.GUARD_ACTION}


def test_staging_keeps_the_service_s_own_fields(user, account, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    file = SimpleUploadedFile("kdp.csv", b"IMEI\n356938035643809\n")
    staged = stage_spreadsheet(
        request_for(user, {}), file, service="kdp", account=account, operation="upload", allow_bad_check_digit=True
    )
    assert Upload.objects.get(pk=staged.pk).allow_bad_check_digit
    assert AuditEvent.objects.filter(action="kdp.file_upload", target_id=str(staged.pk)).exists()


@pytest.fixture
def rendered(monkeypatch):
    """The template each call of the preview response renders (the templates themselves are the services')."""
    names: list[str] = []
    monkeypatch.setattr(previews, "render", lambda request, name, ctx: names.append(name) or name)
    return names


def test_a_status_poll_after_parsing_ended_reloads_the_page(user, account, rendered):
    staged = Upload(account=account, status=Upload.Status.READY)
    response = preview_response(request_for(user, htmx_target="upload-status"), staged, "kdp/upload_detail.html", {})
    assert response["HX-Refresh"] == "true" and rendered == []


def test_a_status_poll_while_parsing_gets_the_status_region(user, account, rendered):
    staged = Upload(account=account, status=Upload.Status.PARSING)
    preview_response(request_for(user, htmx_target="upload-status"), staged, "kdp/upload_detail.html", {})
    assert rendered == ["kdp/upload_detail.html#upload-status"]


def test_each_shared_or_own_region_renders_alone_and_anything_else_the_page(user, account, rendered):
    staged = Upload(account=account, status=Upload.Status.READY)
    for target in ("preview-rows", "bulk-action", "elsewhere", None):
        request = request_for(user, htmx_target=target)
        preview_response(request, staged, "guard/staged.html", {}, regions=("bulk-action",))
    assert rendered == [
        "guard/staged.html#preview-rows",
        "guard/staged.html#bulk-action",
        "guard/staged.html",
        "guard/staged.html",
    ]


# --- daily schedules ----------------------------------------------------------------------------------------------


def test_a_daily_schedule_is_stored_per_account_audited_and_confirmed(user, account):
    request = request_for(user, {"account": account.pk, "hour": "4"})
    response = NIGHTLY.save(request, HourForm(request.POST))
    assert response.status_code == 302 and response["Location"] == "/"
    schedule = NIGHTLY.rows().get()
    assert (schedule.name, schedule.cron, schedule.args) == (
        f"Nightly: account {account.pk}",
        "0 4 * * *",
        f"({account.pk},)",
    )
    assert AuditEvent.objects.get(action="test.nightly_schedule").summary == {"hour_utc": 4}
    assert words(request) == ["Acme Mobile runs every day at 04:00 UTC."]


def test_a_second_schedule_of_the_account_replaces_the_first(user, account):
    for hour in ("4", "6"):
        request = request_for(user, {"account": account.pk, "hour": hour})
        NIGHTLY.save(request, HourForm(request.POST))
    assert list(NIGHTLY.rows().values_list("cron", flat=True)) == ["0 6 * * *"]


def test_an_unknown_account_is_a_bad_request_and_a_wrong_hour_is_explained(user, account):
    request = request_for(user, {"account": "999", "hour": "4"})
    assert NIGHTLY.save(request, HourForm(request.POST)).status_code == 400
    request = request_for(user, {"account": account.pk, "hour": "24"})
    assert NIGHTLY.save(request, HourForm(request.POST)).status_code == 302
    assert words(request) == ["Choose an hour up to 23."]
    assert not NIGHTLY.rows().exists() and not AuditEvent.objects.filter(action__startswith="test.").exists()


def test_removing_a_schedule_audits_its_name_and_refuses_another_task_s(user, account):
    ours = Schedule.objects.create(func=NIGHTLY.task, name="Nightly: account 1")
    other = Schedule.objects.create(func="tests.elsewhere", name="Other")
    with pytest.raises(Http404):
        NIGHTLY.remove(request_for(user, {}), other.pk)
    request = request_for(user, {})
    assert NIGHTLY.remove(request, ours.pk).status_code == 302
    assert not Schedule.objects.filter(pk=ours.pk).exists() and Schedule.objects.filter(pk=other.pk).exists()
    assert AuditEvent.objects.get(action="test.nightly_unschedule").summary == {"schedule": "Nightly: account 1"}
    assert words(request) == ["Nightly run removed."]


# --- the job lookup ------------------------------------------------------------------------------------------------


def test_a_job_is_found_by_any_page_unless_the_page_names_its_kinds(user, account):
    job = Job.objects.create(kind="guard.lock", title="Lock", account=account)
    request = request_for(user)
    assert get_job_for_user(request, job.pk) == job
    assert get_job_for_user(request, job.pk, ("guard.lock", "guard.unlock")) == job
    with pytest.raises(Http404):
        get_job_for_user(request, job.pk, ("kdp.upload", "kdp.delete"))


# --- pages of a list -----------------------------------------------------------------------------------------------


def test_a_page_is_cut_by_reading_one_row_more_and_names_its_last_row_when_more_follow():
    rows = [Job(pk=n) for n in range(1, 6)]
    assert cut_page(rows, 2) == (rows[:2], 2)
    assert cut_page(rows, 5) == (rows, None)
    assert cut_page(rows[3:], 2, lambda job: f"at {job.pk}") == (rows[3:], None)
    assert cut_page(rows, 4, lambda job: f"at {job.pk}") == (rows[:4], "at 4")


def test_an_account_without_credentials_is_told_what_it_needs_and_a_ready_one_nothing(account):
    needs = ", ".join(account.missing_credentials("guard"))
    assert needs and account.cannot_call("guard") == f"Acme Mobile cannot call Knox Guard yet: it needs {needs}."
    ready = ready_account()
    assert ready.missing_credentials("kdp") == [] and ready.cannot_call("kdp") == ""
    assert ready.cannot_call("efota").startswith("Ready cannot call E-FOTA yet: it needs the E-FOTA client ID")


# --- the answers every service's queueing views give (portal.views, portal.previews) ----------------------------


def test_a_spreadsheet_is_submittable_only_when_ready_and_its_account_can_call_the_service(user, account):
    ready = ready_account()
    for status in (Upload.Status.PARSING, Upload.Status.REFUSED, Upload.Status.SUBMITTED):
        assert previews.cannot_submit(Upload(account=ready, status=status), "kdp") == previews.NOT_READY
    assert previews.cannot_submit(Upload(account=ready, status=Upload.Status.READY), "kdp") == ""
    missing = previews.cannot_submit(Upload(account=account, status=Upload.Status.READY), "guard")
    assert missing == account.cannot_call("guard") and missing.startswith("Acme Mobile cannot call")


def test_a_staged_spreadsheet_is_found_for_its_own_service_only(user, account):
    staged = Upload.objects.create(account=account, service="guard", operation=Upload.Operation.GUARD_ACTION)
    assert previews.get_staged(staged.pk, "guard") == staged
    with pytest.raises(Http404):
        previews.get_staged(staged.pk, "kdp")


def test_refused_says_why_and_sends_back_and_queued_opens_the_job_s_page(user, account):
    request = request_for(user, {})
    response = refused(request, "Nothing was sent: choose an account.", "portal:dashboard")
    assert response.status_code == 302 and response.url == reverse("portal:dashboard")
    job = Job.objects.create(kind="guard.lock", account=account, title="Lock 2 devices")
    request = request_for(user, {})
    response = queued(request, job)
    assert response.url == reverse("guard:job", args=[job.pk]) == job.get_absolute_url()
    assert words(request) == [f"Job #{job.pk} queued: Lock 2 devices."]
    request = request_for(user, {})
    assert queued(request, job, "Job queued, in other words.").url == job.get_absolute_url()
    assert words(request) == ["Job queued, in other words."]


def test_a_retry_opens_the_retry_and_a_second_one_says_which_job_retried_it(user, account):
    original = Job.objects.create(kind="kdp.upload", account=account, title="Upload")
    retry = Job.objects.create(kind="kdp.upload", account=account, title="Retry")
    request = request_for(user, {})
    assert retried(request, original, retry, True, "Queued for 2 devices.").url == retry.get_absolute_url()
    assert words(request) == ["Queued for 2 devices."]
    request = request_for(user, {})
    retried(request, original, retry, False, "not shown")
    assert words(request) == [
        f"Job #{original.pk} was already retried as job #{retry.pk} (queued); nothing new was queued. "
        "If devices still fail there, retry them from that job."
    ]


FOLLOW_UP_WORDS = {
    "nothing": "Nothing to read.",
    "asking": "Job #{read.pk} reads {parts}.",
    "already": "#{read.pk} busy.",
}


def test_a_follow_up_read_is_told_in_words_without_javascript_and_as_its_region_with_htmx(user, account):
    job = Job.objects.create(kind="efota.force_update", account=account, title="Force update")
    read = Job.objects.create(kind="efota.status_refresh", account=account, title="Refresh", total=1)
    regions: list[str] = []
    region = ("efota/job.html#fu-status", lambda: regions.append("context") or {})
    for found, created, said in (
        (None, False, "Nothing to read."),
        (read, True, f"Job #{read.pk} reads 1 part."),
        (read, False, f"#{read.pk} busy."),
    ):
        request = request_for(user, {})
        response = follow_up(request, job, found, created, region=region, **FOLLOW_UP_WORDS)
        assert response.url == job.get_absolute_url() and words(request) == [said]
    read.total = 3
    request = request_for(user, {})
    follow_up(request, job, read, True, region=region, **FOLLOW_UP_WORDS)
    assert words(request) == [f"Job #{read.pk} reads 3 parts."] and regions == []  # no context without htmx
    htmx = request_for(user, htmx_target="fu-status")
    htmx.method = "POST"
    assert follow_up(htmx, job, read, False, region=region, **FOLLOW_UP_WORDS).status_code == 200
    assert regions == ["context"] and words(htmx) == []
