"""Loaded with `-p tests.bootstrap` before pytest-django reads the settings: points the test session
at the embedded services, with its own database, Redis database and blob root, so that parallel test
sessions (and a running demo) never see each other's data, tasks or blobs."""
from __future__ import annotations

import os

os.environ.setdefault("HARTONOMOUS_TESTING", "1")

from hartonomous import stack  # noqa: E402

stack.export_urls()
SESSION = os.getpid()
os.environ.setdefault("HARTONOMOUS_TEST_DATABASE_NAME", f"test_hartonomous_{SESSION}")
os.environ.setdefault("HARTONOMOUS_BLOB_ROOT", str(stack.home() / "test-blobs" / str(SESSION)))
os.environ.setdefault("HARTONOMOUS_MODEL_ROOTS", str(stack.home() / "test-models" / str(SESSION)))
if os.environ.get("REDIS_URL", "").endswith("db=0"):
    # databases 1-15; db 0 is the demo's
    os.environ["REDIS_URL"] = os.environ["REDIS_URL"][: -len("db=0")] + f"db={1 + SESSION % 15}"
