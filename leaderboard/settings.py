"""Django settings, driven by environment variables (Healthchecks style).

Defaults are the embedded mode: SQLite, media on local disk, Celery on kombu's
filesystem transport, so nothing but Python packages is needed. DATABASE_URL and
CELERY_BROKER_URL switch to PostgreSQL and Redis/RabbitMQ.
"""

from __future__ import annotations

import os
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")


def envbool(name: str, default: str) -> bool:
    # A typo must not silently mean False (DEBUG=Ture, SANDBOX_ISOLATION=of): refuse it.
    value = os.getenv(name, default).strip().lower()
    if value not in _TRUE + _FALSE:
        from django.core.exceptions import ImproperlyConfigured

        raise ImproperlyConfigured(f"{name}={value!r} is not a boolean: use true/false, on/off, yes/no or 1/0")
    return value in _TRUE


def envint(name: str, default: str) -> int:
    return int(os.getenv(name, default))


def envfloat(name: str, default: str) -> float:
    return float(os.getenv(name, default))


def envpath(name: str, default: Path) -> Path:
    value = os.getenv(name)
    return Path(value).resolve() if value else default


# All mutable state (database, media, broker folders) lives under VAR_DIR unless
# overridden, so a checkout can be wiped clean by deleting one folder.
VAR_DIR = envpath("VAR_DIR", BASE_DIR / "var")

SECRET_KEY = os.getenv("SECRET_KEY", "dev-only-insecure-key-change-me-in-production")
DEBUG = envbool("DEBUG", "False")
ALLOWED_HOSTS = [h for h in os.getenv("ALLOWED_HOSTS", "*").split(",") if h]
CSRF_TRUSTED_ORIGINS = [o for o in os.getenv("CSRF_TRUSTED_ORIGINS", "").split(",") if o]
SITE_NAME = os.getenv("SITE_NAME", "Robustness Ladder")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "leaderboard",
    "evaluator",
]

MIDDLEWARE = [
    "leaderboard.middleware.JsonApiErrorsMiddleware",  # /api/ errors as JSON, never HTML
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "leaderboard.urls"

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
            ],
        },
    },
]

WSGI_APPLICATION = "leaderboard.wsgi.application"

DATABASES = {
    "default": dj_database_url.parse(
        os.getenv("DATABASE_URL", f"sqlite:///{VAR_DIR / 'db.sqlite3'}"),
        conn_max_age=envint("DB_CONN_MAX_AGE", "0"),
    )
}
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # The web server and the worker write concurrently; wait for the lock instead
    # of failing with "database is locked".
    DATABASES["default"]["OPTIONS"] = {"timeout": 30, "transaction_mode": "IMMEDIATE"}
    # A fresh checkout has no var/ yet; SQLite cannot create the folder itself.
    if DATABASES["default"]["NAME"] not in ("", ":memory:"):
        Path(DATABASES["default"]["NAME"]).parent.mkdir(parents=True, exist_ok=True)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "index"
LOGOUT_REDIRECT_URL = "index"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATICFILES_FINDERS = [
    "django.contrib.staticfiles.finders.FileSystemFinder",
    "django.contrib.staticfiles.finders.AppDirectoriesFinder",
]
STATIC_ROOT = envpath("STATIC_ROOT", VAR_DIR / "staticfiles")
# The run command collects the static files (collectstatic) and serves them itself
# (whitenoise), no extra server needed. Compressed (gzip) and fingerprinted names
# (css/site.<hash>.css): whitenoise serves those with a ten-year, immutable cache, and
# a changed file gets a new name. Plotly is the cartesian bundle (heatmaps included,
# a third of the full one) vendored under static/vendor/ (see static/vendor/README.md).
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True

MEDIA_ROOT = envpath("MEDIA_ROOT", VAR_DIR / "media")
MEDIA_URL = "/media/"

# Uploads: archives are streamed to disk and capped (see leaderboard.uploads).
MAX_UPLOAD_BYTES = envint("MAX_UPLOAD_BYTES", str(200 * 1024 * 1024))
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
FILE_UPLOAD_HANDLERS = [
    "leaderboard.uploads.SizeCappedUploadHandler",
    "django.core.files.uploadhandler.MemoryFileUploadHandler",
    "django.core.files.uploadhandler.TemporaryFileUploadHandler",
]
UPLOADS_PER_HOUR = envint("UPLOADS_PER_HOUR", "10")

DEFAULT_BENCHMARK = os.getenv("DEFAULT_BENCHMARK", "mnist-5k")

# Celery. The embedded default needs no server: kombu's filesystem transport
# passes messages through folders under VAR_DIR.
CELERY_BROKER_URL = os.getenv("CELERY_BROKER_URL", "filesystem://")
BROKER_DIR = envpath("BROKER_DIR", VAR_DIR / "broker")
if CELERY_BROKER_URL.startswith("filesystem://"):
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(BROKER_DIR / "out"),
        "data_folder_out": str(BROKER_DIR / "out"),
        "processed_folder": str(BROKER_DIR / "processed"),
        # Broadcast (pidbox) messages; kombu's default is ./control in the cwd.
        "control_folder": str(BROKER_DIR / "control"),
        "store_processed": False,
        # kombu polls the folder once a second by default: up to a second of waiting
        # at every hand-off (upload → worker, evaluate → rank). A listdir of an
        # almost empty folder ten times a second costs nothing.
        "polling_interval": envfloat("BROKER_POLL_S", "0.1"),
    }
    # kombu does not create these folders itself.
    for _folder in ("out", "processed", "control"):
        (BROKER_DIR / _folder).mkdir(parents=True, exist_ok=True)
else:
    # Redis redelivers an unacked message after this many seconds: it must exceed
    # the longest job, or a slow attack would run twice.
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "visibility_timeout": envint("CELERY_VISIBILITY_TIMEOUT", str(4 * 3600))
    }
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True

# Engine jobs run in a child process with these limits (evaluator.engine.sandbox).
SANDBOX_TIMEOUT_S = envint("SANDBOX_TIMEOUT_S", "1800")
SANDBOX_MEMORY_MB = envint("SANDBOX_MEMORY_MB", "6144")
# Keep one sandbox child per worker process started ahead, TensorFlow imported, so
# a job does not wait ~3 s for the import (see evaluator.services.spares).
SANDBOX_SPARE = envbool("SANDBOX_SPARE", "True")
# Before an upload's column (one short job per existing network) start this many more
# spares, so their imports overlap the first cells (each ~0.6 GB while it waits).
SANDBOX_SPARES_AHEAD = envint("SANDBOX_SPARES_AHEAD", "2")
# Every child that loads an uploaded model runs under bubblewrap (evaluator.engine.isolation).
# Where bubblewrap cannot run, uploads wait with that reason. SANDBOX_ISOLATION=off runs
# them without it: development only, announced loudly at start-up.
SANDBOX_ISOLATION = envbool("SANDBOX_ISOLATION", "on")
JOB_MAX_ATTEMPTS = envint("JOB_MAX_ATTEMPTS", "3")
# Celery's limits on one task, enforced by the prefork pool the worker runs (one
# process): above every attempt of the longest job, so they stop only a task that
# no job limit stops. At the soft limit a network's task hands over to a fresh one
# (evaluator.tasks: the pipeline resumes from what is stored); the hard limit kills it.
CELERY_TASK_SOFT_TIME_LIMIT = envint("CELERY_TASK_SOFT_TIME_LIMIT", str(JOB_MAX_ATTEMPTS * SANDBOX_TIMEOUT_S + 600))
CELERY_TASK_TIME_LIMIT = envint("CELERY_TASK_TIME_LIMIT", str(CELERY_TASK_SOFT_TIME_LIMIT + 300))
# A stored network evaluated on a newer network's set may take this many times its own
# measured pass over the eval split, plus the margin (TensorFlow import and model load).
PEER_TIMEOUT_FACTOR = envfloat("PEER_TIMEOUT_FACTOR", "10")
PEER_TIMEOUT_MARGIN_S = envfloat("PEER_TIMEOUT_MARGIN_S", "60")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.getenv("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
