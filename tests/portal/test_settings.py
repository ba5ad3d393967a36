"""Settings come from the environment through strict helpers; production refuses development secrets."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from django.core.exceptions import ImproperlyConfigured

from portal import settings as portal_settings
from tests.base import ROOT
from tests.portal.helpers import PRODUCTION, manage


def test_check_deploy_passes_without_warnings_in_production():
    r = manage("check", "--deploy", "--fail-level", "WARNING", env=PRODUCTION)
    assert r.returncode == 0, r.stderr
    assert "no issues" in r.stdout


@pytest.mark.parametrize(
    ("missing", "message"),
    [
        ("SECRET_KEY", "SECRET_KEY is missing or is the development placeholder"),
        ("FIELD_ENCRYPTION_KEY", "FIELD_ENCRYPTION_KEY"),
    ],
)
def test_production_refuses_missing_secrets(missing, message):
    env = {k: v for k, v in PRODUCTION.items() if k != missing}
    r = manage("check", env=env)
    assert r.returncode != 0 and message in r.stderr


def test_production_refuses_the_development_placeholders():
    r = manage("check", env={**PRODUCTION, "SECRET_KEY": portal_settings.DEV_SECRET_KEY})
    assert r.returncode != 0 and "development placeholder" in r.stderr
    r = manage("check", env={**PRODUCTION, "FIELD_ENCRYPTION_KEY": portal_settings.DEV_FIELD_ENCRYPTION_KEY})
    assert r.returncode != 0 and "development placeholder" in r.stderr


def test_secrets_can_come_from_files(tmp_path):
    key_file = tmp_path / "key"
    key_file.write_text(PRODUCTION["SECRET_KEY"] + "\n")
    env = {**PRODUCTION, "SECRET_KEY_FILE": str(key_file)}
    del env["SECRET_KEY"]
    assert manage("check", env=env).returncode == 0
    r = manage("check", env={**env, "SECRET_KEY_FILE": str(tmp_path / "absent")})
    assert r.returncode != 0 and "SECRET_KEY_FILE" in r.stderr and "cannot be read" in r.stderr


def test_a_malformed_encryption_key_is_reported():
    r = manage("check", env={"FIELD_ENCRYPTION_KEY": "not-a-key"})
    assert r.returncode != 0 and "portal.E001" in r.stderr


def test_strict_helpers(monkeypatch):
    monkeypatch.setenv("X_BOOL", "yes")
    with pytest.raises(ImproperlyConfigured, match="use 'True' or 'False'"):
        portal_settings.envbool("X_BOOL", "False")
    monkeypatch.setenv("X_INT", "12a")
    with pytest.raises(ImproperlyConfigured, match="whole number"):
        portal_settings.envint("X_INT", "1")
    monkeypatch.setenv("X_LIST", " a, ,b ,")
    assert portal_settings.envlist("X_LIST", "") == ["a", "b"]
    monkeypatch.setenv("X_SECRET", "plain")
    assert portal_settings.envsecret("X_SECRET") == "plain"


def test_database_url_parsing():
    pg = portal_settings.database_from_url("postgres://user:p%40ss@db.example:5433/portal?sslmode=require")
    assert pg["ENGINE"] == "django.db.backends.postgresql"
    assert (pg["NAME"], pg["USER"], pg["PASSWORD"], pg["HOST"], pg["PORT"]) == (
        "portal",
        "user",
        "p@ss",
        "db.example",
        "5433",
    )
    assert pg["OPTIONS"] == {"sslmode": "require"}
    lite = portal_settings.database_from_url("sqlite:////tmp/x.sqlite3")
    assert str(lite["NAME"]) == "/tmp/x.sqlite3"
    with pytest.raises(ImproperlyConfigured, match="not supported"):
        portal_settings.database_from_url("mysql://x/y")


def test_redis_url_switches_queue_and_cache():
    code = "from django.conf import settings as s; print(s.Q_CLUSTER.get('redis'), s.CACHES['default']['BACKEND'])"
    r = subprocess.run(
        [sys.executable, "-c", f"import django; django.setup(); {code}"],
        cwd=ROOT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "portal.settings", "REDIS_URL": "redis://127.0.0.1:6379/3"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert r.stdout.split() == ["redis://127.0.0.1:6379/3", "django.core.cache.backends.redis.RedisCache"]


@pytest.mark.skipif(
    bool({"KNOX_KDP_RATE_LIMIT", "KNOX_GUARD_RATE_LIMIT"} & set(os.environ)),
    reason="rate limits overridden by the environment",
)
def test_default_rate_limits_follow_the_constants():
    """The pacing defaults are the documented (KG, seed 003) and assumed (KDP, knox-api.md §6 q11) limits.

    Settings write the numbers out (portal imports no service app), so this is what keeps them equal."""
    from guard.constants import KG_MAX_REQUESTS_PER_SECOND
    from kdp.constants import KDP_MAX_REQUESTS_PER_SECOND

    assert portal_settings.KNOX_KDP_RATE_LIMIT == KDP_MAX_REQUESTS_PER_SECOND
    assert portal_settings.KNOX_GUARD_RATE_LIMIT == KG_MAX_REQUESTS_PER_SECOND


@pytest.mark.skipif("KDP_CHUNK_SIZE" in os.environ, reason="chunk size overridden by the environment")
def test_default_kdp_chunk_size_is_the_assumed_maximum():
    """KDP_CHUNK_SIZE's default, written out in settings, is the assumed KDP maximum (knox-api.md §6 q1)."""
    from kdp.constants import KDP_MAX_DEVICES_PER_REQUEST

    assert portal_settings.KDP_CHUNK_SIZE == KDP_MAX_DEVICES_PER_REQUEST
