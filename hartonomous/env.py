"""Typed environment helpers: every setting comes from the environment (healthchecks.io style).

`env_str("SECRET_KEY")` reads HARTONOMOUS_SECRET_KEY, or the file named by HARTONOMOUS_SECRET_KEY_FILE.
Names already carrying a foreign prefix (DATABASE_URL, REDIS_URL, NEO4J_URI, AWS_*) are read as is.
"""
from __future__ import annotations

import os
from pathlib import Path

PREFIX = "HARTONOMOUS_"
UNPREFIXED = ("DATABASE_URL", "REDIS_URL", "NEO4J_URI", "NEO4J_USER", "NEO4J_PASSWORD", "AWS_", "STRIPE_")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_name(name: str) -> str:
    if name.startswith(PREFIX) or name.startswith(UNPREFIXED):
        return name
    return PREFIX + name


def _raw(name: str) -> str | None:
    key = env_name(name)
    if key in os.environ:
        return os.environ[key]
    file_path = os.environ.get(key + "_FILE")
    if file_path:
        return Path(file_path).read_text().strip()
    return None


def env_str(name: str, default: str = "") -> str:
    value = _raw(name)
    return default if value is None else value


def env_bool(name: str, default: bool = False) -> bool:
    value = _raw(name)
    if value is None:
        return default
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"{env_name(name)} must be a boolean (1/0, true/false), got {value!r}")


def env_int(name: str, default: int) -> int:
    value = _raw(name)
    if value is None or value.strip() == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{env_name(name)} must be an integer, got {value!r}") from None


def env_float(name: str, default: float) -> float:
    value = _raw(name)
    if value is None or value.strip() == "":
        return default
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"{env_name(name)} must be a number, got {value!r}") from None


def env_list(name: str, default: list[str] | None = None) -> list[str]:
    value = _raw(name)
    if value is None:
        return list(default or [])
    return [item.strip() for item in value.split(",") if item.strip()]


def home() -> Path:
    """Where embedded services and data live ($HARTONOMOUS_HOME, default ./.hartonomous)."""
    return Path(os.environ.get("HARTONOMOUS_HOME") or ".hartonomous").resolve()
