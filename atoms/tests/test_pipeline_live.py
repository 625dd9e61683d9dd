"""End to end through the real ASGI server and Celery worker: ingest → embed task → hybrid search."""
from __future__ import annotations

import time
import uuid

import pytest

from tests.live_http import call

pytestmark = pytest.mark.live


def _post(url: str, key: str, body: dict) -> tuple[int, dict]:
    return call("POST", url, key, body)


def test_an_ingested_text_is_embedded_by_the_worker_and_found(asgi_server, celery_worker, alpha, committed):
    from django.db import connection

    from atoms.models import AtomEmbedding

    tag = uuid.uuid4().hex[:8]
    status, body = _post(f"{asgi_server}/api/atoms", alpha.keys["write"],
                         {"text": f"Glaciers carve valleys as the ice slowly flows downhill. {tag}",
                          "metadata": {"tag": tag}})
    assert status == 201, body
    atom_id = body["atom"]["id"]
    connection.set_tenant(alpha.tenant)
    deadline = time.monotonic() + 90
    while not AtomEmbedding.objects.filter(atom_id=atom_id).exists():
        assert time.monotonic() < deadline, "the worker did not embed the atom within 90 s"
        time.sleep(0.5)
    status, found = _post(f"{asgi_server}/api/search/semantic", alpha.keys["read"],
                          {"text": "ice moving down a mountain", "k": 3, "filters": {"metadata": {"tag": tag}}})
    assert status == 200 and found["results"][0]["atom"]["id"] == atom_id
    assert found["results"][0]["why"]["vector"]["rank"] == 1
