"""Files on their way in: how a request carrying a file is read, and the portal's own temporary files.

- `allow_long_part_headers()` (called once at start-up, portal.apps) lets Django read a multipart part whose
  headers pass 1,024 bytes, so a long file name reaches the form and gets a sentence there
  (portal.forms.FileField) instead of a bare "Bad Request (400)" page.
- The two upload handlers (settings.FILE_UPLOAD_HANDLERS) are Django's, plus: the uploaded file keeps the name
  exactly as sent in `full_name` (Django cuts `name` to 255 characters), and a file streamed to disk is written
  to PORTAL_TEMP_DIR as `portal-upload-*`, where `manage.py cleanup_uploads` finds it if the web server was killed
  before Django could delete it.
- `temp_file()` makes any other temporary file the portal writes (Excel exports being built), named the same way.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.files import temp
from django.core.files.uploadedfile import TemporaryUploadedFile, UploadedFile
from django.core.files.uploadhandler import FileUploadHandler
from django.core.files.uploadhandler import MemoryFileUploadHandler as DjangoMemoryFileUploadHandler
from django.core.files.uploadhandler import TemporaryFileUploadHandler as DjangoTemporaryFileUploadHandler
from django.http import multipartparser

# The longest file name a form accepts, in characters. Upload.filename holds 255; file systems allow 255 bytes,
# which a name of CJK characters reaches at 85.
FILE_NAME_MAX_CHARS = 200
# Django reads at most 1,024 bytes of one part's headers (Content-Disposition with the file name, Content-Type),
# which a name of about 950 letters or 310 CJK characters fills; past it the whole request is refused with a bare
# 400 before any form can explain. 64 KB holds any name a file system allows many times over, and it bounds only
# a buffer read once per part (DATA_UPLOAD_MAX_NUMBER_FILES and _FIELDS bound the parts).
MULTIPART_HEADER_MAX_BYTES = 64 * 1024
# Every temporary file the portal creates starts with this, inside PORTAL_TEMP_DIR: the clean-up deletes only
# such files, never another program's, even if PORTAL_TEMP_DIR is pointed at a shared folder such as /tmp.
TEMP_PREFIX = "portal-"


def allow_long_part_headers() -> None:
    if not isinstance(getattr(multipartparser, "MAX_TOTAL_HEADER_SIZE", None), int):
        raise ImproperlyConfigured(
            "django.http.multipartparser.MAX_TOTAL_HEADER_SIZE is gone; find the new way to let a long file name "
            "through (portal/files.py), or a long name gets a bare 400 again."
        )
    # Parser.__iter__ reads the module's constant on every request, so setting it here is enough.
    multipartparser.MAX_TOTAL_HEADER_SIZE = max(multipartparser.MAX_TOTAL_HEADER_SIZE, MULTIPART_HEADER_MAX_BYTES)


def temp_dir() -> Path:
    path = Path(settings.PORTAL_TEMP_DIR)
    path.mkdir(parents=True, exist_ok=True)
    return path


def temp_file(kind: str, suffix: str = "") -> str:
    """A new empty file `portal-<kind>-*<suffix>` in PORTAL_TEMP_DIR; the caller deletes it."""
    handle, path = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{kind}-", suffix=suffix, dir=temp_dir())
    os.close(handle)
    return path


class PortalTemporaryUploadedFile(TemporaryUploadedFile):
    """Django's, in PORTAL_TEMP_DIR with the portal's prefix, and an extension of at most 10 characters (Django
    keeps the whole of it: a name like "x.aaaa…" of 300 characters made the file system refuse the file, a 500)."""

    def __init__(
        self, name: str, content_type: str, size: int, charset: str | None, content_type_extra: Any = None
    ) -> None:
        ext = os.path.splitext(name)[1][:10]
        file = temp.NamedTemporaryFile(prefix=f"{TEMP_PREFIX}upload-", suffix=".upload" + ext, dir=temp_dir())
        UploadedFile.__init__(self, file, name, content_type, size, charset, content_type_extra)


class MemoryFileUploadHandler(DjangoMemoryFileUploadHandler):
    def file_complete(self, file_size: int) -> UploadedFile | None:
        uploaded = super().file_complete(file_size)
        if uploaded is not None:
            uploaded.full_name = self.file_name  # type: ignore[attr-defined]
        return uploaded


class TemporaryFileUploadHandler(DjangoTemporaryFileUploadHandler):
    def new_file(self, *args: Any, **kwargs: Any) -> None:
        FileUploadHandler.new_file(self, *args, **kwargs)
        self.file = PortalTemporaryUploadedFile(
            self.file_name, self.content_type, 0, self.charset, self.content_type_extra
        )

    def file_complete(self, file_size: int) -> UploadedFile:
        uploaded = super().file_complete(file_size)
        uploaded.full_name = self.file_name  # type: ignore[attr-defined]
        return uploaded
