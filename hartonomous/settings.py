"""Django settings: read only from the environment (see docs/configuration.md for every variable)."""
from __future__ import annotations

import os
import secrets
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

from .env import env_bool, env_float, env_int, env_list, env_str, home
from .stack import read_state

BASE_DIR = Path(__file__).resolve().parent.parent
HOME = home()
DEMO = env_bool("DEMO", False)
DEBUG = env_bool("DEBUG", DEMO)
EMBEDDED = env_bool("EMBEDDED", not os.environ.get("DATABASE_URL"))  # the local stack under $HARTONOMOUS_HOME


def _local_secret_key() -> str:
    """Embedded mode keeps a random key in $HARTONOMOUS_HOME; production must set one."""
    path = HOME / "run" / "secret_key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = env_str("SECRET_KEY", "")
if not SECRET_KEY:
    if not EMBEDDED:
        raise RuntimeError("HARTONOMOUS_SECRET_KEY (or HARTONOMOUS_SECRET_KEY_FILE) must be set in production")
    SECRET_KEY = _local_secret_key()
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", [".localhost", "localhost", "127.0.0.1", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])


def _embedded_url(name: str, env_key: str) -> str:
    return os.environ.get(env_key) or read_state().get(name, {}).get("url", "")


def _pool_options() -> dict:
    size = env_int("DB_POOL_MAX", 8)
    if size <= 0:
        return {}
    return {"pool": {"min_size": 1, "max_size": size, "timeout": env_float("DB_POOL_TIMEOUT", 10.0)}}


def database_from_url(url: str) -> dict:
    if not url:
        return {"ENGINE": "django_tenants.postgresql_backend", "NAME": "hartonomous"}
    parsed = urlparse(url)
    query = {k: v[-1] for k, v in parse_qs(parsed.query).items()}
    return {
        "ENGINE": "django_tenants.postgresql_backend",
        "NAME": unquote(parsed.path.lstrip("/")) or "hartonomous",
        "USER": unquote(parsed.username or ""),
        "PASSWORD": unquote(parsed.password or ""),
        "HOST": query.pop("host", parsed.hostname or ""),
        "PORT": str(parsed.port or ""),
        # A connection pool per process (psycopg_pool): ASGI serves sync views from many threads, and
        # persistent per-thread connections would pile up; the pool bounds them and reuses them.
        "OPTIONS": {**query, **_pool_options()},
        "CONN_MAX_AGE": 0,
        "TEST": {"NAME": env_str("TEST_DATABASE_NAME", "test_hartonomous")},
    }


DATABASE_URL = _embedded_url("postgres", "DATABASE_URL")
REDIS_URL = _embedded_url("redis", "REDIS_URL") or "redis://127.0.0.1:6379/0"
DATABASES = {"default": database_from_url(DATABASE_URL)}
DATABASE_ROUTERS = ("django_tenants.routers.TenantSyncRouter",)

SHARED_APPS = [
    "django_tenants",
    "tenants",
    "billing",
    "hartonomous.admin_site.HartonomousAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.postgres",  # OpClass in functional indexes (atoms.atom_trgm_head), lookups
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "simple_history",
    "django_celery_beat",
    "channels",
    "hartonomous",
]
TENANT_APPS = [
    "django.contrib.contenttypes",
    "simple_history",
    "atoms",
    "inference",
    "concepts",
    "autonomy",
    "provenance",
]
INSTALLED_APPS = SHARED_APPS + [app for app in TENANT_APPS if app not in SHARED_APPS]
TENANT_MODEL = "tenants.Tenant"
TENANT_DOMAIN_MODEL = "tenants.Domain"
PUBLIC_SCHEMA_NAME = "public"
SHOW_PUBLIC_IF_NO_TENANT_FOUND = True
TENANT_LIMIT_SET_CALLS = True  # SET search_path only when the schema changes (reset on close: pool-safe)

MIDDLEWARE = [
    "hartonomous.correlation.CorrelationIdMiddleware",
    "tenants.middleware.TenantResolutionMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "simple_history.middleware.HistoryRequestMiddleware",
    "tenants.middleware.RateLimitHeadersMiddleware",
]
ROOT_URLCONF = "hartonomous.urls"
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
            ]
        },
    }
]
ASGI_APPLICATION = "hartonomous.asgi.application"
WSGI_APPLICATION = None
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "/static/"
STATIC_ROOT = HOME / "static"
# POST /api/models {"path"} may only read model files under these folders (the command has no limit)
MODEL_IMPORT_ROOTS = env_list("MODEL_ROOTS", [str(HOME / "models")])
LLM_BACKEND = env_str("LLM_BACKEND", "auto")  # auto (the C core) | c | gpu | reference: inference.runtime.Llama
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("MAX_REQUEST_BYTES", 10 * 1024 * 1024)
MAX_UPLOAD_BYTES = env_int("MAX_UPLOAD_BYTES", 512 * 1024 * 1024)

# Security defaults for production; the demo runs on plain http on localhost.
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_SECURE = env_bool("SECURE_COOKIES", not DEBUG)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if env_bool("BEHIND_PROXY", False) else None

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "tenants.authentication.ApiKeyAuthentication",
        "tenants.authentication.JWTAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["tenants.permissions.HasScope"],
    "DEFAULT_THROTTLE_CLASSES": ["tenants.throttling.TenantRateThrottle"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": [
        "rest_framework.parsers.JSONParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "hartonomous.errors.exception_handler",
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Hartonomous API",
    "DESCRIPTION": "Multi-tenant, database-native AI substrate. Every error has the shape "
    '{"error": {"code", "message", "details", "correlation_id"}}.',
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "APPEND_COMPONENTS": {
        "securitySchemes": {
            "ApiKey": {"type": "http", "scheme": "bearer", "description": "hk_... API key or OIDC JWT"}
        }
    },
    "SECURITY": [{"ApiKey": []}],
}

# API keys, OIDC, rate limits
API_KEY_PREFIX = "hk_"
OIDC_JWKS_FILE = env_str("OIDC_JWKS_FILE", "")
OIDC_JWKS_URL = env_str("OIDC_JWKS_URL", "")
OIDC_ISSUER = env_str("OIDC_ISSUER", "")
OIDC_AUDIENCE = env_str("OIDC_AUDIENCE", "")
OIDC_LEEWAY_SECONDS = env_int("OIDC_LEEWAY_SECONDS", 60)
OIDC_JWKS_CACHE_SECONDS = env_int("OIDC_JWKS_CACHE_SECONDS", 300)
OIDC_TENANT_CLAIM = env_str("OIDC_TENANT_CLAIM", "tenant")
OIDC_SCOPE_CLAIM = env_str("OIDC_SCOPE_CLAIM", "scope")
RATE_LIMIT_ENABLED = env_bool("RATE_LIMIT_ENABLED", True)
BENCH_ENDPOINTS = env_bool("BENCH_ENDPOINTS", False)

# History retention (days): operational vs regulatory records
HISTORY_RETENTION_DAYS = env_int("HISTORY_RETENTION_DAYS", 90)
REGULATORY_RETENTION_DAYS = env_int("REGULATORY_RETENTION_DAYS", 7 * 365)
REGULATORY_HISTORY_APPS = env_list("REGULATORY_HISTORY_APPS", ["billing", "tenants"])
SIMPLE_HISTORY_HISTORY_ID_USE_UUID = False

# Atoms and search
NEAR_DUPLICATE_THRESHOLD = env_float("NEAR_DUPLICATE_THRESHOLD", 0.95)
SEARCH_EF_SEARCH = env_int("SEARCH_EF_SEARCH", 100)
SEARCH_MAX_K = env_int("SEARCH_MAX_K", 1000)

# Concepts: discovery and binding
CONCEPTS_K_MAX = env_int("CONCEPTS_K_MAX", 20)
CONCEPTS_SAMPLE_SIZE = env_int("CONCEPTS_SAMPLE_SIZE", 4000)
CONCEPTS_MIN_ATOMS = env_int("CONCEPTS_MIN_ATOMS", 10)
CONCEPTS_INCREMENTAL_MAX_CHANGE = env_float("CONCEPTS_INCREMENTAL_MAX_CHANGE", 0.2)
CONCEPTS_DRIFT_RATIO = env_float("CONCEPTS_DRIFT_RATIO", 1.5)
CONCEPTS_MATCH_FACTOR = env_float("CONCEPTS_MATCH_FACTOR", 1.0)
BINDING_BUCKET_SECONDS = env_float("BINDING_BUCKET_SECONDS", 5.0)
BINDING_MIN_COUNT = env_int("BINDING_MIN_COUNT", 2)
BINDING_MIN_PMI = env_float("BINDING_MIN_PMI", 0.5)
BINDING_MIN_LIFT = env_float("BINDING_MIN_LIFT", 1.5)
BINDING_ISA_MIN = env_float("BINDING_ISA_MIN", 0.95)

# Billing
DEFAULT_CREDITS = env_float("DEFAULT_CREDITS", 1000.0)

# Celery


def celery_url(redis_url: str) -> str:
    """kombu spells a unix socket `redis+socket://PATH?virtual_host=DB` (it ignores `db=`)."""
    if not redis_url.startswith("unix://"):
        return redis_url
    path, _, query = redis_url[len("unix://"):].partition("?")
    db = parse_qs(query).get("db", ["0"])[-1]
    return f"redis+socket://{path}?virtual_host={db}"


CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "") or celery_url(REDIS_URL)
CELERY_RESULT_BACKEND = env_str("CELERY_RESULT_BACKEND", "") or CELERY_BROKER_URL
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Celery 5.7's Django fixup closes a prefork child's connection pool after every task (celery#10554):
# each task then opened new PostgreSQL backends. Keep the connection for this many tasks instead;
# hartonomous.celery drops a broken one before each task. 0: Celery's behaviour.
CELERY_DB_REUSE_MAX = env_int("CELERY_DB_REUSE_MAX", 1000)
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_RESULT_EXPIRES = timedelta(hours=6)
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_ALWAYS_EAGER = False
CELERY_BEAT_SCHEDULE = {
    "prune-history": {"task": "hartonomous.tasks.prune_history", "schedule": timedelta(hours=24)},
}



def _app_schedules() -> dict:
    """Apps add periodic tasks by defining SCHEDULE = {name: {"task", "schedule"}} in <app>/schedule.py."""
    import importlib

    merged = {}
    for app in ("atoms", "inference", "concepts", "autonomy", "provenance", "billing", "tenants"):
        try:
            merged.update(importlib.import_module(f"{app}.schedule").SCHEDULE)
        except ModuleNotFoundError as exc:
            if exc.name != f"{app}.schedule":
                raise
    return merged


CELERY_BEAT_SCHEDULE.update(_app_schedules())

# Cache and channel layer share Redis
CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        # the layer blocks up to 5 s reading a channel: the socket must wait longer than that
        "CONFIG": {"hosts": [{"address": REDIS_URL, "socket_timeout": 30}]},
    }
}

LOG_LEVEL = env_str("LOG_LEVEL", "INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"correlation": {"()": "hartonomous.correlation.CorrelationIdFilter"}},
    "formatters": {"json": {"()": "hartonomous.logging.JsonFormatter"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "json", "filters": ["correlation"]}
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
