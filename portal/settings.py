"""Settings for the Knox reseller operations portal.

One settings module; every value that differs between deployments comes from the environment through the
strict helpers below (healthchecks style). With no environment at all the portal runs locally on SQLite with
the django-q2 ORM broker and a database cache, which is what `make run` and `make test` rely on.

Every variable read here is documented in `.env.example` and in the README's "Configuration" section.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlparse

from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

# Values that only ever make sense on a developer's machine. With DEBUG off the portal refuses to start while
# either is still in use (see the checks at the bottom of this file).
DEV_SECRET_KEY = "dev-only-insecure-secret-key-change-me"  # noqa: S105 - refused when DEBUG is off
DEV_FIELD_ENCRYPTION_KEY = "ZGV2LW9ubHktaW5zZWN1cmUtZmllbGQta2V5LTAwMDA="  # base64("dev-only-insecure-field-key-0000")


def env(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def envbool(name: str, default: str) -> bool:
    v = os.environ.get(name, default)
    if v not in ("", "True", "False"):
        raise ImproperlyConfigured(f"Unexpected value {name}={v!r}, use 'True' or 'False'")
    return v == "True"


def envint(name: str, default: str) -> int:
    v = os.environ.get(name, default)
    try:
        return int(v)
    except ValueError:
        raise ImproperlyConfigured(f"Unexpected value {name}={v!r}, expected a whole number") from None


def envfloat(name: str, default: str) -> float:
    v = os.environ.get(name, default)
    try:
        return float(v)
    except ValueError:
        raise ImproperlyConfigured(f"Unexpected value {name}={v!r}, expected a number") from None


def envlist(name: str, default: str) -> list[str]:
    """A comma-separated list; blanks are dropped."""
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


def envsecret(name: str, default: str = "") -> str:
    """Read a secret from `NAME_FILE` (a path, for Docker/Kubernetes secrets) or else from `NAME`."""
    path = os.environ.get(f"{name}_FILE")
    if path:
        try:
            return Path(path).read_text().strip()
        except OSError as e:
            raise ImproperlyConfigured(f"{name}_FILE={path!r} cannot be read: {e.strerror}") from None
    return os.environ.get(name, default)


def database_from_url(url: str) -> dict[str, object]:
    """Turn `postgres://user:pass@host:port/name?opt=val` or `sqlite:///path` into a DATABASES entry."""
    parsed = urlparse(url)
    if parsed.scheme in ("postgres", "postgresql", "pgsql"):
        options = dict(parse_qsl(parsed.query))
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": unquote(parsed.path.lstrip("/")),
            "USER": unquote(parsed.username or ""),
            "PASSWORD": unquote(parsed.password or ""),
            "HOST": parsed.hostname or "",
            "PORT": str(parsed.port or ""),
            "CONN_MAX_AGE": envint("DATABASE_CONN_MAX_AGE", "60"),
            "CONN_HEALTH_CHECKS": True,
            "OPTIONS": options,
            "TEST": {"NAME": env("DATABASE_TEST_NAME") or None},
        }
    if parsed.scheme == "sqlite":
        # sqlite:///relative/path or sqlite:////absolute/path
        name = url[len("sqlite:///") :] or "db.sqlite3"
        return sqlite_database(BASE_DIR / name if not name.startswith("/") else Path(name))
    raise ImproperlyConfigured(f"DATABASE_URL scheme {parsed.scheme!r} is not supported; use postgres:// or sqlite:///")


def sqlite_database(path: Path) -> dict[str, object]:
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": path,
        # Kept open between requests and tasks, as on PostgreSQL: django-q2 closes "old" connections around every
        # task in the pusher, each worker and the monitor, and reopening a SQLite file costs about a millisecond.
        "CONN_MAX_AGE": envint("DATABASE_CONN_MAX_AGE", "60"),
        # Several processes (web, qcluster workers, management commands) share the file: wait for the write lock
        # instead of failing with "database is locked", and use WAL so readers never block the writer.
        "OPTIONS": {
            "timeout": 30,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        },
    }


def load_dotenv(path: Path) -> None:
    """Read KEY=VALUE lines from `.env` into the environment; real environment variables win."""
    if not path.is_file():
        return
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        value = value.strip().strip("'\"")
        if value:  # an empty line in a copied .env.example means "use the default"
            os.environ.setdefault(key.strip(), value)


TESTING = "pytest" in sys.modules or (len(sys.argv) > 1 and sys.argv[1] == "test")

if not TESTING:
    load_dotenv(BASE_DIR / ".env")

SECRET_KEY = envsecret("SECRET_KEY", DEV_SECRET_KEY)
DEBUG = envbool("DEBUG", "True")
ALLOWED_HOSTS = envlist("ALLOWED_HOSTS", "127.0.0.1,localhost,testserver")
CSRF_TRUSTED_ORIGINS = envlist("CSRF_TRUSTED_ORIGINS", "")

# Fernet keys for secrets stored in the database. The first key encrypts; every key decrypts, so a new key is
# put first and the old one kept until `manage.py rotate_encryption_keys` has re-encrypted every row.
_field_keys = envsecret("FIELD_ENCRYPTION_KEYS") or envsecret("FIELD_ENCRYPTION_KEY")
FIELD_ENCRYPTION_KEYS = [k.strip() for k in _field_keys.split(",") if k.strip()] or [DEV_FIELD_ENCRYPTION_KEY]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "django_htmx",
    "template_partials",
    "django_q",
    "portal",
    "kdp",
    "guard",
    "efota",
    "sandbox",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Static files are served before authentication so the login page has its stylesheet.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # Changes to users, groups and permissions are audited as done by request.user (portal/useraudit.py).
    "portal.middleware.AuditActorMiddleware",
    # Every view needs a logged-in user unless it is decorated with @login_not_required (login, /healthz).
    # A login lasts SESSION_COOKIE_AGE from sign-in, not from the last request.
    "portal.middleware.LoginLifetimeMiddleware",
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
    "portal.middleware.PermissionCacheMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "portal.middleware.SecurityHeadersMiddleware",
]

ROOT_URLCONF = "portal.urls"
WSGI_APPLICATION = "portal.wsgi.application"
ASGI_APPLICATION = "portal.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "portal.context_processors.portal",
            ],
        },
    },
]

DATABASE_URL = env("DATABASE_URL")
if DATABASE_URL:
    DATABASES = {"default": database_from_url(DATABASE_URL)}
else:
    DATABASES = {"default": sqlite_database(BASE_DIR / "db.sqlite3")}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Redis, when configured, carries the django-q2 queue and the cache (tokens, rate-limit slots). Without it the
# database does both jobs, which is enough for one host.
REDIS_URL = env("REDIS_URL")
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": env("CACHE_KEY_PREFIX", "portal"),
        }
    }
else:
    # A database cache, not local memory: Knox tokens must be shared by the web process and every worker.
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.db.DatabaseCache",
            "LOCATION": "portal_cache",
        }
    }

Q_CLUSTER: dict[str, object] = {
    "name": env("Q_CLUSTER_NAME", "portal"),
    "workers": envint("Q_WORKERS", "2"),
    # A KDP upload of 200,000 devices runs 200 requests at 10/s plus status polling; give jobs room.
    "timeout": envint("Q_TIMEOUT", "3600"),
    # Must exceed timeout: an ORM/Redis task whose worker died is handed out again after `retry` seconds.
    "retry": envint("Q_RETRY", "3700"),
    "max_attempts": envint("Q_MAX_ATTEMPTS", "3"),
    "save_limit": envint("Q_SAVE_LIMIT", "1000"),
    "ack_failures": True,
    "catch_up": False,
    "poll": envfloat("Q_POLL", "0.5"),
    # Tasks taken from the broker per fetch; more than one saves a database round trip per job when many small
    # jobs (single-device Knox Guard actions) are queued at once.
    "bulk": envint("Q_BULK", "10"),
    "label": "Background tasks",
}
# A running job's lease lasts this long without a heartbeat. A job whose worker died is resumed once it expires (by
# the every-minute schedule), or at once when a worker starts on the same host and finds the holder's process gone.
JOB_LEASE_SECONDS = envint("JOB_LEASE_SECONDS", "60")
if REDIS_URL:
    Q_CLUSTER["redis"] = REDIS_URL
else:
    Q_CLUSTER["orm"] = "default"
if envbool("Q_SYNC", "False") or TESTING:
    # Tests run tasks in-process (django-q2 docs); tests of real workers start `qcluster` themselves.
    Q_CLUSTER["sync"] = True

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 10}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

if TESTING:
    PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "portal:dashboard"
LOGOUT_REDIRECT_URL = "login"
SESSION_COOKIE_AGE = envint("SESSION_COOKIE_AGE", str(8 * 3600))  # one working day
SESSION_EXPIRE_AT_BROWSER_CLOSE = True
# Failed logins for one username (any case) within the window before further attempts are refused for the rest
# of it, without checking the password; 20 failures from one client address lock that address (portal/throttle.py).
# 0 switches throttling off.
LOGIN_THROTTLE_FAILURES = envint("LOGIN_THROTTLE_FAILURES", "5")
LOGIN_THROTTLE_WINDOW = envint("LOGIN_THROTTLE_WINDOW", "900")  # seconds, counted from the first failure

LANGUAGE_CODE = "en-gb"
TIME_ZONE = env("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if not DEBUG and not TESTING
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
# In development and tests whitenoise serves straight from the app and project static folders; production
# serves the collected, hashed and compressed files from STATIC_ROOT (`manage.py collectstatic`).
WHITENOISE_USE_FINDERS = DEBUG or TESTING
WHITENOISE_AUTOREFRESH = DEBUG or TESTING
MEDIA_ROOT = BASE_DIR / env("MEDIA_ROOT", "var/media")  # relative paths are taken from the project folder
DATA_UPLOAD_MAX_MEMORY_SIZE = envint("DATA_UPLOAD_MAX_MEMORY_SIZE", str(5 * 1024 * 1024))
# Days an uploaded spreadsheet's file is kept once nothing needs it any more: from the end of the job that acted
# on it, or (never submitted: refused, or left at the preview) from the upload. 0 deletes it at the first clean-up
# after that (hourly, `manage.py cleanup_uploads`). The Upload and its rows stay either way: they are the record.
UPLOAD_RETENTION_DAYS = envint("UPLOAD_RETENTION_DAYS", "30")
if UPLOAD_RETENTION_DAYS < 0:
    raise ImproperlyConfigured(f"UPLOAD_RETENTION_DAYS={UPLOAD_RETENTION_DAYS} must be 0 or more (days)")
# The portal's temporary files: uploads being received (Django streams those over FILE_UPLOAD_MAX_MEMORY_SIZE,
# 2.5 MB, to disk) and Excel exports being built. All are named portal-*; the clean-up deletes those older than an
# hour, which only a killed process leaves behind.
# Created when first needed. (Django's FILE_UPLOAD_TEMP_DIR is not used: the handlers below write here.)
PORTAL_TEMP_DIR = BASE_DIR / env("PORTAL_TEMP_DIR", "var/tmp")
# Django's two handlers, plus: the whole file name is kept for the form's check, temporary files go to the above.
FILE_UPLOAD_HANDLERS = ["portal.files.MemoryFileUploadHandler", "portal.files.TemporaryFileUploadHandler"]

# --- Email ---------------------------------------------------------------------------------------------------

# Staff get an email when a job they queued ends (portal/notify.py; each user can turn it off under "My
# settings"). Development prints the emails on the console; production sends them through SMTP.
EMAIL_BACKEND = env("EMAIL_BACKEND") or (  # empty (as in .env.example) means the default
    "django.core.mail.backends.console.EmailBackend" if DEBUG else "django.core.mail.backends.smtp.EmailBackend"
)
EMAIL_HOST = env("EMAIL_HOST", "localhost")
EMAIL_PORT = envint("EMAIL_PORT", "25")
EMAIL_HOST_USER = env("EMAIL_HOST_USER")
EMAIL_HOST_PASSWORD = envsecret("EMAIL_HOST_PASSWORD")
EMAIL_USE_TLS = envbool("EMAIL_USE_TLS", "False")
EMAIL_USE_SSL = envbool("EMAIL_USE_SSL", "False")
if EMAIL_USE_TLS and EMAIL_USE_SSL:
    raise ImproperlyConfigured("EMAIL_USE_TLS and EMAIL_USE_SSL are exclusive; set at most one to True")
EMAIL_TIMEOUT = envint("EMAIL_TIMEOUT", "30")
DEFAULT_FROM_EMAIL = env("DEFAULT_FROM_EMAIL") or "Knox portal <portal@localhost>"
# The portal's address as staff open it, for the links in emails (no request to take it from in a worker).
PORTAL_URL = (env("PORTAL_URL") or "http://127.0.0.1:8000").rstrip("/")

# --- Knox ---------------------------------------------------------------------------------------------------

# Region preset for new accounts (each account can still pick its own region and override every base URL).
KNOX_REGION = env("KNOX_REGION", "eu")
if KNOX_REGION not in ("eu", "us"):
    raise ImproperlyConfigured(f"Unexpected value KNOX_REGION={KNOX_REGION!r}, use 'eu' or 'us'")
# Where accounts whose environment is "sandbox" send every call (see `manage.py knox_sandbox`).
KNOX_SANDBOX_URL = env("KNOX_SANDBOX_URL", "http://127.0.0.1:8765").rstrip("/")
KNOX_CONNECT_TIMEOUT = envfloat("KNOX_CONNECT_TIMEOUT", "5")
KNOX_READ_TIMEOUT = envfloat("KNOX_READ_TIMEOUT", "60")
# Attempts after the first for a call that failed with 5xx/timeout/connection error (429s do not count).
KNOX_MAX_RETRIES = envint("KNOX_MAX_RETRIES", "4")
KNOX_MAX_RATE_LIMITED_RETRIES = envint("KNOX_MAX_RATE_LIMITED_RETRIES", "30")
KNOX_BACKOFF_BASE = envfloat("KNOX_BACKOFF_BASE", "0.5")
KNOX_BACKOFF_MAX = envfloat("KNOX_BACKOFF_MAX", "30")
# How long a job waits for Knox to answer again (portal.engine.Outage) before it ends what is left as not sent.
KNOX_OUTAGE_PATIENCE = envint("KNOX_OUTAGE_PATIENCE", "1800")
# Requests per second per account and service, shared by every process. 0 switches pacing off.
# The defaults are Knox's limits, written out rather than imported because settings may not import a service app
# (portal depends on nothing above it): guard.constants.KG_MAX_REQUESTS_PER_SECOND (100, seed 003) and
# kdp.constants.KDP_MAX_REQUESTS_PER_SECOND (10, a guess: knox-api.md §6 q11). The constants stay the evidence;
# tests/portal/test_settings.py fails if a default and its constant differ (a system check could not tell a changed
# default from an operator's deliberate override in the environment).
KNOX_GUARD_RATE_LIMIT = envfloat("KNOX_GUARD_RATE_LIMIT", "100")
KNOX_KDP_RATE_LIMIT = envfloat("KNOX_KDP_RATE_LIMIT", "10")
KNOX_EFOTA_RATE_LIMIT = envfloat("KNOX_EFOTA_RATE_LIMIT", "10")

# Behind a reverse proxy the audit log takes the client address from the first X-Forwarded-For entry.
AUDIT_TRUST_X_FORWARDED_FOR = envbool("AUDIT_TRUST_X_FORWARDED_FOR", "False")

# Spreadsheets staff upload (KDP and Knox Guard): refused above these sizes, with a message saying so.
SPREADSHEET_MAX_BYTES = envint("SPREADSHEET_MAX_BYTES", str(20 * 1024 * 1024))
SPREADSHEET_MAX_ROWS = envint("SPREADSHEET_MAX_ROWS", "200000")
# Per workbook, measured from its XML before anything is loaded (portal/spreadsheets.py): its sheets; its cells in
# all, each sheet counted from A1 to its last filled row and column (finding the header may load every sheet);
# and the memory the one sheet being read would take (32 bytes a cell plus its text, and 40 bytes more for each
# filled cell while calamine builds the grid). A parse of a file within the defaults peaks under 200 MB (measured:
# bench/parse_rss.py, docs/performance.md); raise SPREADSHEET_MAX_MEMORY_MB only with memory to match.
SPREADSHEET_MAX_SHEETS = envint("SPREADSHEET_MAX_SHEETS", "50")
SPREADSHEET_MAX_CELLS = envint("SPREADSHEET_MAX_CELLS", "10000000")
SPREADSHEET_MAX_MEMORY_MB = envint("SPREADSHEET_MAX_MEMORY_MB", "128")
# Devices per KDP request. The default is kdp.constants.KDP_MAX_DEVICES_PER_REQUEST (1000, knox-api.md §6 q1),
# written out for the same reason as the rate limits and checked by the same test; kdp.tasks caps a larger value.
KDP_CHUNK_SIZE = envint("KDP_CHUNK_SIZE", "1000")

# --- Security -----------------------------------------------------------------------------------------------

SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = False  # htmx reads the token from <body hx-headers>, not the cookie; harmless either way
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
if not DEBUG:
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_SSL_REDIRECT = envbool("SECURE_SSL_REDIRECT", "True")
    SECURE_HSTS_SECONDS = envint("SECURE_HSTS_SECONDS", str(365 * 24 * 3600))
    SECURE_HSTS_INCLUDE_SUBDOMAINS = envbool("SECURE_HSTS_INCLUDE_SUBDOMAINS", "True")
    SECURE_HSTS_PRELOAD = envbool("SECURE_HSTS_PRELOAD", "True")
    # Behind a TLS-terminating reverse proxy that sets X-Forwarded-Proto.
    if envbool("SECURE_PROXY_SSL_HEADER", "True"):
        SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# --- Logging ------------------------------------------------------------------------------------------------

LOG_LEVEL = env("LOG_LEVEL", "INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django": {"handlers": ["console"], "level": LOG_LEVEL, "propagate": False},
        # Django's request logger would print tracebacks with local variables of failing views; secrets never
        # sit in views' locals, but the portal's own error handling logs what operators need.
        "django.request": {"handlers": ["console"], "level": "ERROR", "propagate": False},
    },
}

# --- Production safety --------------------------------------------------------------------------------------

if not DEBUG and not TESTING:
    if not SECRET_KEY or SECRET_KEY == DEV_SECRET_KEY:
        raise ImproperlyConfigured("DEBUG is False but SECRET_KEY is missing or is the development placeholder")
    if not FIELD_ENCRYPTION_KEYS or DEV_FIELD_ENCRYPTION_KEY in FIELD_ENCRYPTION_KEYS:
        raise ImproperlyConfigured(
            "DEBUG is False but FIELD_ENCRYPTION_KEY(S) is missing or is the development placeholder; "
            "generate one with: python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'"
        )

if (BASE_DIR / "local_settings.py").exists():
    from local_settings import *  # noqa: F403
