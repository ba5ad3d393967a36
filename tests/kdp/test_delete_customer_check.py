"""Deleting from a spreadsheet checks each row's recorded customer before Knox does (issue 16, item 3).

Staff picked Contoso for 4 devices the portal had under Fabrikam: every device failed at Knox with 40000044 and
the spreadsheet was stuck as submitted. The preview now says who each device is registered to, flags the rows a
chosen customer would see refused, offers "delete each device from the customer it is registered to" (one job per
customer), and a submission Knox refused can be read again and submitted anew.
"""

from __future__ import annotations

import pytest

from kdp.models import Customer, Device, Transaction, TransactionDevice, submit_upload
from kdp.tasks import plan_items, run_transfer
from portal.models import Job, Upload
from tests.base import BaseTestCase, fresh_imeis, make_user, sandbox_state
from tests.kdp.helpers import imei_csv, make_upload, ready_account, two_customers

pytestmark = pytest.mark.usefixtures("quick_kdp")  # tests/conftest.py: no pacing, first poll sooner


class DeleteCustomerCheckTestCase(BaseTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.account = ready_account()
        self.contoso, self.fabrikam = two_customers(self.account)
        self.imeis = fresh_imeis(5, "35866600")
        for imei in self.imeis[:4]:
            Device.objects.create(
                account=self.account, identifier=imei, kind="imei", imei=imei, customer=self.fabrikam,
                state=Device.State.REGISTERED,
            )  # fmt: skip
        # The fifth device is unknown to the portal.
        self.upload = make_upload(
            self.account, imei_csv(self.imeis), "delete.csv", operation="delete", user=self.operator
        )
        self.url = f"/kdp/uploads/{self.upload.pk}/"
        self.client.force_login(self.operator)

    def test_the_preview_says_who_the_devices_are_registered_to(self):
        r = self.client.get(self.url)
        self.assertContains(r, "Registered to, in the portal's records")
        self.assertContains(r, "<strong>4</strong> devices registered to Fabrikam Health", html=False)
        self.assertContains(r, "<strong>1</strong> device the portal has no registration for")
        self.assertContains(r, "Delete each device from the customer it is registered to")

    def test_choosing_another_customer_flags_each_mismatched_row_with_its_recorded_customer(self):
        r = self.client.get(
            self.url, {"customer": self.contoso.pk}, headers={"HX-Request": "true", "HX-Target": "customer-check"}
        )
        self.assertNotContains(r, "<html")
        self.assertContains(r, "4 devices are registered to another customer than Contoso Logistics")
        for row, imei in enumerate(self.imeis[:4], start=2):
            self.assertContains(r, f"<td>{row}</td><td><code>{imei}</code></td><td>Fabrikam Health (4622222222)</td>")
        ok = self.client.get(
            self.url, {"customer": self.fabrikam.pk}, headers={"HX-Request": "true", "HX-Target": "customer-check"}
        )
        self.assertContains(ok, "No device of the file is registered to another customer")

    def test_confirm_refuses_a_customer_the_records_contradict_and_keeps_the_spreadsheet_ready(self):
        r = self.client.post(f"{self.url}confirm/", {"customer": self.contoso.pk, "target": "chosen"})
        assert r.status_code == 200
        self.assertContains(r, "4 of the 5 devices are registered to another customer than Contoso Logistics")
        self.assertContains(r, "row 2 (" + self.imeis[0] + ") is registered to Fabrikam Health (4622222222)")
        assert not Job.objects.filter(kind="kdp.delete").exists()
        self.upload.refresh_from_db()
        assert self.upload.status == Upload.Status.READY

    def test_confirm_accepts_the_recorded_customer(self):
        r = self.client.post(f"{self.url}confirm/", {"customer": self.fabrikam.pk, "target": "chosen"})
        job = Job.objects.get(kind="kdp.delete")
        self.assertRedirects(r, f"/kdp/jobs/{job.pk}/", fetch_redirect_response=False)
        assert (job.params["customer"], job.total, "rows" in job.params) == (self.fabrikam.pk, 5, False)

    def test_confirm_needs_a_customer_or_the_recorded_choice(self):
        r = self.client.post(f"{self.url}confirm/", {"target": "chosen"})
        self.assertContains(r, "Choose the customer to delete the devices from.")
        assert not Job.objects.filter(kind="kdp.delete").exists()

    def test_delete_from_the_recorded_customers_queues_one_job_per_customer(self):
        Device.objects.filter(identifier=self.imeis[3]).update(customer=self.contoso)
        r = self.client.post(f"{self.url}confirm/", {"target": "recorded"})
        self.assertRedirects(r, self.url, fetch_redirect_response=False)
        jobs = {j.params["customer"]: j for j in Job.objects.filter(kind="kdp.delete")}
        assert set(jobs) == {self.fabrikam.pk, self.contoso.pk}
        assert (jobs[self.fabrikam.pk].total, jobs[self.contoso.pk].total) == (3, 1)
        assert jobs[self.contoso.pk].params["rows"] == {"recorded_customer": True}
        assert [i.identifier for i in plan_items(jobs[self.fabrikam.pk])] == self.imeis[:3]
        assert [(i.identifier, i.customer_pk) for i in plan_items(jobs[self.contoso.pk])] == [
            (self.imeis[3], self.contoso.pk)
        ]

    def test_the_recorded_choice_needs_a_recorded_registration(self):
        Device.objects.all().update(state=Device.State.DELETED)
        r = self.client.post(f"{self.url}confirm/", {"target": "recorded"})
        self.assertContains(r, "The portal&#x27;s records show none of these devices registered to a customer")
        assert not Job.objects.filter(kind="kdp.delete").exists()

    def test_a_delete_with_a_customer_column_warns_of_devices_under_another_customer(self):
        rows = "".join(f"{imei},Contoso Logistics\n" for imei in self.imeis[:2])
        upload = make_upload(self.account, f"IMEI,Customer\n{rows}".encode(), "d2.csv", operation="delete")
        r = self.client.get(f"/kdp/uploads/{upload.pk}/")
        self.assertContains(r, "2 of these devices are registered to another customer in the portal&#x27;s records")
        self.assertNotContains(r, "Registered to, in the portal")  # the file names each row's customer itself

    # --- a submission Knox refused can be chosen again ------------------------------------------------------

    def submit_and_end(self, status: str, failed: int) -> Job:
        job = submit_upload(self.upload, user=self.operator, customer=self.contoso)
        Job.objects.filter(pk=job.pk).update(status=status, failed=failed)
        return job

    def test_a_submission_knox_refused_can_be_read_again_and_submitted_anew(self):
        self.submit_and_end(Job.Status.FAILED, 5)
        page = self.client.get(self.url)
        self.assertContains(page, "Read the file again and choose again")
        with self.captureOnCommitCallbacks(execute=True):
            r = self.client.post(f"{self.url}restage/", {"sheet": self.upload.sheet, "device_column": "IMEI"})
        self.assertRedirects(r, self.url, fetch_redirect_response=False)
        self.upload.refresh_from_db()
        assert self.upload.status == Upload.Status.READY and self.upload.valid == 5
        r = self.client.post(f"{self.url}confirm/", {"customer": self.fabrikam.pk, "target": "chosen"})
        assert Job.objects.filter(kind="kdp.delete", params__customer=self.fabrikam.pk).count() == 1

    def test_the_job_page_offers_no_retry_for_a_wrong_customer_and_says_how_to_choose_again(self):
        """Item 4: a retry cannot fix 40000044, so there is no Retry button; the page says why and where to go."""
        job = submit_upload(self.upload, user=self.operator, customer=self.contoso)
        job.claim("test-worker")
        tx = Transaction.objects.create(
            account=self.account, job=job, sequence=1, operation="delete", generation="gen2", customer=self.contoso,
            device_type="IMEI", device_count=5, state=Transaction.State.COMPLETE, failed=5,
        )  # fmt: skip
        TransactionDevice.objects.bulk_create(
            TransactionDevice(transaction=tx, job=job, identifier=i, row_number=n, outcome="failed", code="40000044",
                              message="RESELLER_CUSTOMER_DEVICE_NOT_FOUND")
            for n, i in enumerate(self.imeis, 2)
        )  # fmt: skip
        job.add_progress(failed=5)
        job.finish()
        r = self.client.get(f"/kdp/jobs/{job.pk}/")
        self.assertNotContains(r, f"/kdp/jobs/{job.pk}/retry/")
        self.assertContains(r, "nothing to retry")
        self.assertContains(r, "5 registered to another customer, or not by this reseller")
        self.assertContains(r, f'href="/kdp/uploads/{self.upload.pk}/#choose-again">read it again and choose again</a>')
        # A viewer is told nothing it cannot act on.
        self.client.force_login(self.viewer)
        self.assertNotContains(self.client.get(f"/kdp/jobs/{job.pk}/"), "choose again")

    def test_a_running_or_successful_submission_cannot_be_chosen_again(self):
        job = self.submit_and_end(Job.Status.RUNNING, 0)
        self.assertNotContains(self.client.get(self.url), "Read the file again and choose again")
        r = self.client.post(f"{self.url}restage/", {"device_column": "IMEI"}, follow=True)
        self.assertContains(r, "its job has not ended with failed devices")
        Job.objects.filter(pk=job.pk).update(status=Job.Status.SUCCEEDED)
        self.assertNotContains(self.client.get(self.url), "Read the file again and choose again")
        self.upload.refresh_from_db()
        assert self.upload.status == Upload.Status.SUBMITTED


# --- against the sandbox ----------------------------------------------------------------------------------------


def test_devices_of_two_customers_are_each_deleted_from_their_own(client, synced, knox_sandbox):
    """The issue's case, end to end: the wrong customer is refused in the preview, and "delete each device from the
    customer it is registered to" deletes every device at Knox with no 40000044."""
    contoso = Customer.objects.get(account=synced, name="Contoso Logistics")
    fabrikam = Customer.objects.get(account=synced, name="Fabrikam Health")
    imeis = fresh_imeis(5, "35866611")
    for customer, part in ((fabrikam, imeis[:4]), (contoso, imeis[4:])):
        job = submit_upload(make_upload(synced, imei_csv(part), "u.csv"), user=None, customer=customer)
        run_transfer(job.pk)
    operator = make_user("olivia", "operator")
    delete = make_upload(synced, imei_csv(imeis), "delete.csv", operation="delete", user=operator)
    client.force_login(operator)
    refused = client.post(f"/kdp/uploads/{delete.pk}/confirm/", {"customer": contoso.pk, "target": "chosen"})
    assert "4 of the 5 devices are registered to another customer" in refused.content.decode()
    r = client.post(f"/kdp/uploads/{delete.pk}/confirm/", {"target": "recorded"})
    assert r.status_code == 302
    jobs = list(Job.objects.filter(kind="kdp.delete"))
    assert len(jobs) == 2
    for job in jobs:
        run_transfer(job.pk)
        job.refresh_from_db()
        assert job.status == Job.Status.SUCCEEDED, job.error_summary
    assert not TransactionDevice.objects.filter(job__kind="kdp.delete", code="40000044").exists()
    assert all(i not in sandbox_state(knox_sandbox)["kdp"]["devices"] for i in imeis)
    assert set(Device.objects.filter(identifier__in=imeis).values_list("state", flat=True)) == {Device.State.DELETED}
