"""Loaded with `-p tests.bootstrap` before pytest-django reads the settings: points the test session
at the embedded services and at its own Redis database (so a running demo worker never takes a
test's task)."""
from __future__ import annotations

import os

os.environ.setdefault("HARTONOMOUS_TESTING", "1")

from hartonomous import stack  # noqa: E402

stack.export_urls()
# Tests keep their blobs apart: blob GC in a test must never see (and delete) the demo's blobs.
os.environ.setdefault("HARTONOMOUS_BLOB_ROOT", str(stack.home() / "test-blobs"))
if os.environ.get("REDIS_URL", "").endswith("db=0"):
    os.environ["REDIS_URL"] = os.environ["REDIS_URL"][: -len("db=0")] + "db=1"
