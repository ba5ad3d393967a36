from __future__ import annotations

import io
import re

import pytest
from cryptography.fernet import Fernet
from django.contrib.auth.models import User
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from portal.models import AuditEvent, KnoxAccount


@pytest.mark.django_db
def test_demo_admin_is_created_once_with_a_printed_random_password():
    out = io.StringIO()
    call_command("ensure_demo_admin", stdout=out)
    password = re.search(r"password: (\S+)", out.getvalue()).group(1)
    user = User.objects.get(username="admin")
    assert user.is_staff and user.groups.filter(name="admin").exists()
    assert user.check_password(password) and password not in user.password
    out2 = io.StringIO()
    call_command("ensure_demo_admin", stdout=out2)
    assert password not in out2.getvalue() and "exists" in out2.getvalue()
    assert User.objects.filter(username="admin").count() == 1


@pytest.mark.django_db
def test_rotation_re_encrypts_every_secret_with_the_new_key(settings):
    old = Fernet.generate_key().decode()
    new = Fernet.generate_key().decode()
    settings.FIELD_ENCRYPTION_KEYS = [old]
    account = KnoxAccount(name="A")
    account.set_secret("oauth_client_secret", "s3cret-value")
    account.set_secret("gen1_api_key", "g1-value")
    account.save()
    version = account.credentials_version

    settings.FIELD_ENCRYPTION_KEYS = [new, old]
    out = io.StringIO()
    call_command("rotate_encryption_keys", stdout=out)
    assert "2 secret(s)" in out.getvalue()

    settings.FIELD_ENCRYPTION_KEYS = [new]  # the old key can now be dropped
    account.refresh_from_db()
    assert account.secret("oauth_client_secret") == "s3cret-value" and account.secret("gen1_api_key") == "g1-value"
    assert account.credentials_version == version
    assert AuditEvent.objects.filter(action="secrets.rotate").exists()
    with connection.cursor() as c:
        c.execute("SELECT oauth_client_secret_enc FROM portal_knoxaccount")
        assert "s3cret" not in c.fetchone()[0]


@pytest.mark.django_db
def test_rotation_without_the_old_key_changes_nothing(settings):
    settings.FIELD_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    account = KnoxAccount(name="A")
    account.set_secret("gen1_api_key", "g1")
    account.save()
    settings.FIELD_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    with pytest.raises(CommandError, match="cannot be decrypted"):
        call_command("rotate_encryption_keys", stdout=io.StringIO())
