"""Several customers in one spreadsheet: a customer column (Knox customer ID or an unambiguous name), the preview
grouped by customer with each group's problems, and one confirmation that queues a job per customer with its own
KME profile alias.

Most tests use local customers and never call Knox; one runs the sample file against the in-process sandbox.
"""

from __future__ import annotations

import pytest

from kdp.models import Customer, ProfileAlias, RowCustomer, file_customers
from kdp.tasks import plan_items, run_transfer
from portal.models import AuditEvent, Job, Upload
from tests.base import BaseTestCase, fresh_imeis, make_user, sandbox_state
from tests.kdp.helpers import SAMPLES, make_upload, ready_account, two_customers

pytestmark = pytest.mark.usefixtures("quick_kdp")  # tests/conftest.py: no pacing, first poll sooner

SAMPLE = SAMPLES / "kdp-upload-multi-customer.csv"


def customer_csv(rows: list[tuple[str, str]]) -> bytes:
    return ("IMEI,Customer\n" + "".join(f"{imei},{customer}\n" for imei, customer in rows)).encode()


class MultiCustomerTestCase(BaseTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.account = ready_account()
        self.contoso, self.fabrikam = two_customers(self.account)
        self.pending = Customer.objects.create(
            account=self.account, customer_id="4633333333", name="Pending Verification Co", status="Pending"
        )
        ProfileAlias.objects.create(customer=self.contoso, name="Kiosk")
        ProfileAlias.objects.create(customer=self.fabrikam, name="Field Staff")

    def stage_sample(self) -> Upload:
        return make_upload(self.account, SAMPLE.read_bytes(), SAMPLE.name, user=self.operator)

    def groups_by_label(self, upload: Upload) -> dict[str, object]:
        return {g.label: g for g in file_customers(upload) or []}

    # --- reading the column ---------------------------------------------------------------------------------

    def test_it_keeps_each_valid_rows_customer_as_written(self):
        upload = self.stage_sample()
        assert (upload.status, upload.valid) == (Upload.Status.READY, 8)
        texts = dict(RowCustomer.objects.filter(upload=upload).values_list("row_number", "text"))
        assert texts == {
            2: "Contoso Logistics", 3: "Contoso Logistics", 4: "Contoso Logistics", 5: "fabrikam health",
            6: "Fabrikam Health", 7: "Pending Verification Co", 8: "Initech",
        }  # fmt: skip

    def test_it_groups_the_rows_by_customer_with_each_groups_problem(self):
        groups = self.groups_by_label(self.stage_sample())
        contoso, fabrikam = groups[str(self.contoso)], groups[str(self.fabrikam)]
        assert (contoso.rows, contoso.problem) == (3, "")
        # Two spellings of one name are one customer.
        assert (fabrikam.rows, sorted(fabrikam.texts), fabrikam.problem) == (
            2,
            ["Fabrikam Health", "fabrikam health"],
            "",
        )
        assert "pending verification in Knox" in groups[str(self.pending)].problem
        assert "no customer with the Knox customer ID or name “Initech”" in groups["“Initech”"].problem
        assert groups["No customer given"].rows == 1
        assert "customer column is empty" in groups["No customer given"].problem

    def test_it_matches_a_knox_customer_id_and_refuses_a_name_two_customers_share(self):
        Customer.objects.create(account=self.account, customer_id="4644444444", name="Twin Co", status="Verified")
        Customer.objects.create(account=self.account, customer_id="4655555555", name="twin co", status="Verified")
        imeis = fresh_imeis(2, "35877790")
        upload = make_upload(self.account, customer_csv([(imeis[0], "4611111111"), (imeis[1], "Twin Co")]), "m.csv")
        groups = self.groups_by_label(upload)
        assert groups[str(self.contoso)].rows == 1 and not groups[str(self.contoso)].problem
        problem = groups["“Twin Co”"].problem
        assert "2 customers" in problem and "4644444444, 4655555555" in problem and "Knox customer ID" in problem

    def test_a_file_without_the_column_is_a_one_customer_file(self):
        upload = make_upload(self.account, b"IMEI\n" + fresh_imeis(1, "35877791")[0].encode() + b"\n", "one.csv")
        assert file_customers(upload) is None
        r = self.client_as_operator().get(f"/kdp/uploads/{upload.pk}/")
        self.assertNotContains(r, "Customers in the file")
        self.assertContains(r, 'name="customer"')

    def test_a_refresh_of_the_customer_list_resolves_a_name_without_a_new_upload(self):
        upload = self.stage_sample()
        assert groups_problem(upload, "“Initech”")
        Customer.objects.create(account=self.account, customer_id="4666666666", name="Initech", status="Verified")
        groups = self.groups_by_label(upload)
        assert groups["Initech (4666666666)"].rows == 1 and not groups["Initech (4666666666)"].problem

    def test_reading_the_file_again_replaces_the_customers_of_the_earlier_reading(self):
        upload = self.stage_sample()
        self.client_as_operator()
        with self.captureOnCommitCallbacks(execute=True):
            self.client.post(f"/kdp/uploads/{upload.pk}/restage/", {"device_column": "IMEI"})
        upload.refresh_from_db()
        assert upload.status == Upload.Status.READY and upload.parse_job_id
        rows = RowCustomer.objects.filter(upload=upload)
        assert set(rows.values_list("parse_job", flat=True)) == {upload.parse_job_id}
        assert rows.count() == 7
        assert self.groups_by_label(upload)[str(self.contoso)].rows == 3

    # --- preview and confirm ---------------------------------------------------------------------------------

    def client_as_operator(self):
        self.client.force_login(self.operator)
        return self.client

    def test_the_preview_lists_the_customers_and_an_alias_choice_for_each_usable_one(self):
        upload = self.stage_sample()
        r = self.client_as_operator().get(f"/kdp/uploads/{upload.pk}/")
        self.assertContains(r, "Customers in the file")
        self.assertContains(r, "is still pending verification in Knox")
        self.assertContains(r, "“Initech”")
        self.assertContains(r, f'name="alias_{self.contoso.pk}"')
        self.assertContains(r, f'name="alias_{self.fabrikam.pk}"')
        self.assertNotContains(r, f'name="alias_{self.pending.pk}"')
        self.assertContains(r, '<option value="Kiosk">Kiosk</option>', html=True)
        self.assertContains(r, "Leave out the 3 rows whose customer cannot be used")
        self.assertContains(r, "Queue 2 jobs, one per customer")
        self.assertNotContains(r, 'name="customer"')  # no single customer choice

    def test_confirm_asks_to_leave_out_the_rows_it_cannot_send(self):
        upload = self.stage_sample()
        r = self.client_as_operator().post(f"/kdp/uploads/{upload.pk}/confirm/", {f"alias_{self.contoso.pk}": "Kiosk"})
        assert r.status_code == 200
        self.assertContains(r, "tick this to send the others without them")
        assert not Job.objects.filter(kind="kdp.upload").exists()
        upload.refresh_from_db()
        assert upload.status == Upload.Status.READY

    def test_confirm_refuses_an_alias_the_customer_does_not_have(self):
        upload = self.stage_sample()
        r = self.client_as_operator().post(
            f"/kdp/uploads/{upload.pk}/confirm/", {f"alias_{self.contoso.pk}": "Field Staff", "leave_out": "on"}
        )
        self.assertContains(r, "Contoso Logistics has no KME profile alias “Field Staff”")
        assert not Job.objects.filter(kind="kdp.upload").exists()

    def test_one_confirmation_queues_a_job_per_customer_with_its_own_alias(self):
        upload = self.stage_sample()
        with self.captureOnCommitCallbacks(execute=False) as queued:
            r = self.client_as_operator().post(
                f"/kdp/uploads/{upload.pk}/confirm/",
                {
                    f"alias_{self.contoso.pk}": "Kiosk",
                    f"alias_{self.fabrikam.pk}": "",
                    "order_no": "PO-9",
                    "leave_out": "on",
                },
            )
        self.assertRedirects(r, f"/kdp/uploads/{upload.pk}/", fetch_redirect_response=False)
        jobs = {j.params["customer"]: j for j in Job.objects.filter(kind="kdp.upload")}
        assert set(jobs) == {self.contoso.pk, self.fabrikam.pk} and len(queued) == 2
        contoso, fabrikam = jobs[self.contoso.pk], jobs[self.fabrikam.pk]
        assert (contoso.total, contoso.params["profile_alias"], contoso.params["order_no"]) == (3, "Kiosk", "PO-9")
        assert (fabrikam.total, fabrikam.params["profile_alias"]) == (2, "")
        assert contoso.title == "Register 3 devices for Contoso Logistics"
        # Each job plans exactly its customer's rows.
        assert [(i.row_number, i.customer_pk, i.order_no) for i in plan_items(contoso)] == [
            (2, self.contoso.pk, "PO-7001"),
            (3, self.contoso.pk, "PO-7001"),
            (4, self.contoso.pk, "PO-7001"),
        ]
        assert [i.row_number for i in plan_items(fabrikam)] == [5, 6]
        upload.refresh_from_db()
        assert upload.status == Upload.Status.SUBMITTED and upload.job == contoso
        assert AuditEvent.objects.filter(action="kdp.upload").count() == 2
        page = self.client.get(f"/kdp/uploads/{upload.pk}/")
        self.assertContains(page, f"job #{contoso.pk}")
        self.assertContains(page, f"job #{fabrikam.pk}")
        # Submitted once: a second confirm queues nothing.
        self.client.post(f"/kdp/uploads/{upload.pk}/confirm/", {"leave_out": "on"})
        assert Job.objects.filter(kind="kdp.upload").count() == 2

    def test_it_refuses_when_no_customer_of_the_file_can_be_used(self):
        imeis = fresh_imeis(2, "35877792")
        upload = make_upload(self.account, customer_csv([(imeis[0], "Initech"), (imeis[1], "Globex")]), "x.csv")
        r = self.client_as_operator().post(f"/kdp/uploads/{upload.pk}/confirm/", {"leave_out": "on"})
        self.assertContains(r, "No customer in the file can be used")
        assert not Job.objects.filter(kind="kdp.upload").exists()

    def test_a_delete_with_the_column_queues_a_delete_per_customer(self):
        imeis = fresh_imeis(3, "35877793")
        rows = [(imeis[0], "Contoso Logistics"), (imeis[1], "4622222222"), (imeis[2], "Pending Verification Co")]
        upload = make_upload(self.account, customer_csv(rows), "d.csv", operation="delete")
        groups = self.groups_by_label(upload)
        assert not groups[str(self.pending)].problem  # deleting from a pending customer is allowed
        self.client_as_operator().post(f"/kdp/uploads/{upload.pk}/confirm/", {})
        jobs = Job.objects.filter(kind="kdp.delete")
        assert sorted(j.params["customer"] for j in jobs) == sorted(
            [self.contoso.pk, self.fabrikam.pk, self.pending.pk]
        )
        assert all(j.total == 1 for j in jobs)


def groups_problem(upload: Upload, label: str) -> str:
    return {g.label: g.problem for g in file_customers(upload) or []}[label]


# --- against the sandbox ----------------------------------------------------------------------------------------


def test_the_sample_registers_each_customers_devices_with_its_alias(client, synced, knox_sandbox):
    operator = make_user("olivia", "operator")
    upload = make_upload(synced, SAMPLE.read_bytes(), SAMPLE.name, user=operator)
    contoso = Customer.objects.get(account=synced, name="Contoso Logistics")
    fabrikam = Customer.objects.get(account=synced, name="Fabrikam Health")
    alias = contoso.aliases.order_by("name").first().name
    client.force_login(operator)
    r = client.post(f"/kdp/uploads/{upload.pk}/confirm/", {f"alias_{contoso.pk}": alias, "leave_out": "on"})
    assert r.status_code == 302
    jobs = {j.params["customer"]: j for j in Job.objects.filter(kind="kdp.upload")}
    assert set(jobs) == {contoso.pk, fabrikam.pk}
    for job in jobs.values():
        run_transfer(job.pk)
        job.refresh_from_db()
        assert job.status == Job.Status.SUCCEEDED, job.error_summary
    knox = {d["deviceId"]: d for d in sandbox_state(knox_sandbox)["kdp"]["devices"].values()}
    sample = SAMPLE.read_text().splitlines()[1:]
    imeis = [line.split(",")[0] for line in sample]
    assert [knox[i]["customerId"] for i in imeis[:3]] == [contoso.customer_id] * 3
    assert [knox[i]["customerId"] for i in imeis[3:5]] == [fabrikam.customer_id] * 2
    assert all(i not in knox for i in imeis[5:])  # pending, unknown and blank customers were left out
