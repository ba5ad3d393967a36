"""Very long, odd or hostile file names through every form that takes a file (issue 13, part C).

A 1,000-character name used to get a bare "Bad Request (400)" page: Django's multipart parser refuses a part whose
headers (Content-Disposition with the file name, and Content-Type) pass 1,024 bytes, before any form sees it.
Now the request is read (portal.files.allow_long_part_headers), and portal.forms.FileField, the one file field
every form uses, answers on the same form with a sentence the user can act on (status 200, which htmx swaps).

Bodies are built by hand: the test client keeps only a basename and would hide what a browser or a script can
send.
"""

from __future__ import annotations

import importlib
import inspect
from html import unescape

import pytest
from django import forms as django_forms
from django.http import multipartparser

from portal.models import AuditEvent, KnoxAccount, Upload
from tests.base import make_user
from tests.efota.helpers import CUSTOMER, LICENCE
from tests.efota.helpers import ready_account as efota_account
from tests.guard.helpers import guard_account
from tests.kdp.helpers import ready_account as kdp_account

CSV = b"IMEI\r\n359221145350335\r\n"
NAMES = {
    "1,000 letters": "a" * 996 + ".csv",
    "1,000 CJK characters": "端末一覧" * 249 + ".csv",
}
TOO_LONG = (
    "The file name is 1,000 characters long; rename the file to something shorter (at most 200 characters) "
    "and upload it again."
)


@pytest.fixture(autouse=True)
def _media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.PORTAL_TEMP_DIR = tmp_path / "tmp"


def forms_with_a_file() -> dict[str, tuple[str, dict[str, str], bool]]:
    """Every page with a spreadsheet input: URL, the other fields, and whether the form posts with htmx."""
    kdp = kdp_account()
    guard = guard_account()
    efota = efota_account("E-FOTA Acme")
    efota_fields = {"account": str(efota.pk), "customer_id": CUSTOMER, "licence": LICENCE}
    return {
        "KDP upload": ("/kdp/uploads/", {"account": str(kdp.pk), "operation": "upload"}, False),
        "Knox Guard bulk action": ("/guard/bulk/", {"account": str(guard.pk)}, False),
        "Knox Guard upload": ("/guard/uploads/new/", {"account": str(guard.pk)}, False),
        "E-FOTA force update": (
            "/efota/force-updates/new/",
            {**efota_fields, "model": "SM-G991B", "sales_code": "BTU", "target": "latest", "network_type": "WIFIONLY"},
            False,
        ),
        "E-FOTA abnormal devices": ("/efota/abnormal/", efota_fields, True),
    }


def multipart(fields: dict[str, str], file_field: str, filename: str, content: bytes) -> tuple[bytes, str]:
    """A form body as a browser sends it, the file name untouched."""
    boundary = "----file-names-boundary-7MA4YWxkTrZu0gW"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode() for k, v in fields.items()
    ]
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{file_field}"; filename="{filename}"\r\n'
        "Content-Type: text/csv\r\n\r\n".encode()
        + content
        + b"\r\n"
    )
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def post(client, url: str, fields: dict[str, str], filename: str, *, htmx: bool = False, file_field: str = "file"):
    body, content_type = multipart(fields, file_field, filename, CSV)
    headers = {"HX-Request": "true"} if htmx else {}
    return client.post(url, data=body, content_type=content_type, headers=headers)


@pytest.mark.parametrize("name", NAMES.values(), ids=NAMES.keys())
def test_a_1000_character_name_is_answered_on_the_same_form(client, operator, name):
    client.force_login(operator)
    for page, (url, fields, htmx) in forms_with_a_file().items():
        r = post(client, url, fields, name, htmx=htmx)
        assert r.status_code == 200, (page, r.status_code, r.content[:200])
        text = unescape(r.content.decode())
        assert TOO_LONG in text, page
        assert 'type="file"' in text, page  # the form is there to pick another file
        if htmx:
            assert "<html" not in text, page  # the fragment htmx swaps in
    assert not Upload.objects.exists()


def test_the_limit_is_200_characters(client, operator):
    client.force_login(operator)
    url, fields, _ = forms_with_a_file()["KDP upload"]
    r = post(client, url, fields, "a" * 196 + ".csv")
    assert r.status_code == 302
    assert Upload.objects.get().filename == "a" * 196 + ".csv"
    r = post(client, url, fields, "a" * 197 + ".csv")
    assert r.status_code == 200
    assert "The file name is 201 characters long" in unescape(r.content.decode())
    assert Upload.objects.count() == 1


def test_a_name_with_path_separators_and_nuls_keeps_only_its_last_part(client, operator):
    client.force_login(operator)
    url, fields, _ = forms_with_a_file()["KDP upload"]
    for sent in ("..\\..\\Windows\\dev\x00ices.csv", "../" * 300 + "devices.csv", "C:/Users/x/de\x00vi\x00ces.csv"):
        Upload.objects.all().delete()
        r = post(client, url, fields, sent)
        assert r.status_code == 302, sent
        assert Upload.objects.get().filename == "devices.csv"


def test_a_keys_file_with_a_1000_character_name_is_refused_with_the_sentence(client, db):
    account = KnoxAccount.objects.create(name="Keys", environment="sandbox")
    client.force_login(make_user("alice", "admin", is_staff=True))
    r = post(client, f"/accounts/{account.pk}/keys/", {}, NAMES["1,000 letters"], file_field="keys_file")
    assert r.status_code == 302
    page = unescape(client.get(r.url).content.decode())
    assert f"keys.json not stored: {TOO_LONG}" in page
    assert not AuditEvent.objects.filter(action="account.keys_upload").exists()


def test_the_multipart_parser_reads_long_part_headers():
    # Django's own limit is 1,024 bytes per part's headers: a file name of about 950 letters or 310 CJK characters.
    # portal.apps raises it at start-up; this fails if Django renames the constant it reads.
    from portal import files

    assert multipartparser.MAX_TOTAL_HEADER_SIZE == files.MULTIPART_HEADER_MAX_BYTES >= 16 * 1024


def test_every_file_input_of_the_portal_goes_through_the_shared_field():
    from portal.forms import FileField

    found = []
    for module_name in ("portal.forms", "kdp.forms", "guard.forms", "efota.forms"):
        module = importlib.import_module(module_name)
        for _, form in inspect.getmembers(module, inspect.isclass):
            if not issubclass(form, django_forms.BaseForm) or form.__module__ != module_name:
                continue
            for field_name, field in form.base_fields.items():
                if isinstance(field, django_forms.FileField):
                    found.append(f"{form.__name__}.{field_name}")
                    assert isinstance(field, FileField), f"{module_name}.{form.__name__}.{field_name}"
    assert len(found) >= 5, found  # kdp, guard (2 forms), efota (2 forms) and the two keys.json inputs


def test_a_long_extension_on_a_file_streamed_to_disk_is_not_a_500(client, operator, settings, tmp_path):
    # Over FILE_UPLOAD_MAX_MEMORY_SIZE Django writes the upload to a temporary file named after its extension: a
    # 300-character one is more than the file system takes (OSError, a 500) before any form could answer.
    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 0
    client.force_login(operator)
    url, fields, _ = forms_with_a_file()["KDP upload"]
    r = post(client, url, fields, "x." + "a" * 300)
    assert r.status_code == 200
    assert "The file name is 302 characters long" in unescape(r.content.decode())
    r = post(client, url, fields, "devices.csv")
    assert r.status_code == 302
    assert list((tmp_path / "tmp").iterdir()) == []  # Django deleted its temporary file after the request


def test_temporary_upload_files_are_the_portals_own(settings, tmp_path):
    from portal.files import TemporaryFileUploadHandler

    handler = TemporaryFileUploadHandler()
    name = "端末" * 150 + ".csv"
    handler.new_file("file", name, "text/csv", 3)
    handler.receive_data_chunk(b"abc", 0)
    uploaded = handler.file_complete(3)
    path = uploaded.temporary_file_path()
    assert path.startswith(str(tmp_path / "tmp" / "portal-upload-")) and path.endswith(".upload.csv")
    assert uploaded.full_name == name and len(uploaded.name) == 255  # Django's cut, the full one kept beside it
    uploaded.close()


def test_every_spreadsheet_input_refuses_a_wrong_name_an_empty_file_and_too_many_bytes_in_words(settings):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from portal.forms import SpreadsheetField

    settings.SPREADSHEET_MAX_BYTES = 1024 * 1024
    field, optional = SpreadsheetField(), SpreadsheetField(required=False)
    for name, data, said in (
        ("devices.json", b"[]", "“devices.json” is not a spreadsheet this portal reads; upload an Excel workbook"),
        ("devices.csv", b"", "The file is empty (0 bytes); check that you chose the right file."),
        (
            "devices.csv",
            b"x" * (1024 * 1024 + 1),
            "The file is 1.0 MB; the limit is 1 MB. Split it into smaller files.",
        ),
    ):
        with pytest.raises(django_forms.ValidationError) as refused:
            field.clean(SimpleUploadedFile(name, data))
        assert refused.value.messages[0].startswith(said), name
    good = SimpleUploadedFile("Devices.XLSX", b"PK")
    assert field.clean(good) is good and optional.clean(None) is None
    # The E-FOTA, KDP and Knox Guard spreadsheet inputs are this field.
    from efota.forms import AbnormalForm
    from guard.forms import StagingForm
    from kdp.forms import UploadForm

    assert all(
        isinstance(form.base_fields["file"], SpreadsheetField) for form in (AbnormalForm, StagingForm, UploadForm)
    )
