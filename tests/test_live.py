"""The real ASGI server, a real Celery worker, WebSockets and a schemathesis run over the served schema."""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import urllib.request
import uuid

import pytest

from hartonomous.progress import Progress
from tenants.services import api_key_create

pytestmark = pytest.mark.live


def _get(url: str, headers: dict | None = None):
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), json.loads(exc.read())


def test_it_is_ready_with_database_redis_worker_and_migrations(asgi_server, celery_worker):
    status, _, body = _get(f"{asgi_server}/health/ready")
    assert status == 200, body
    assert all(check["ok"] for check in body["checks"].values()), body


def _own_atom(tenant, tag: str) -> str:
    from django.db import connection

    from atoms.extract import Source
    from atoms.services import atom_ingest

    connection.set_tenant(tenant.tenant)
    uri = f"{tenant.slug}-only-{tag}"
    atom_ingest(tenant=tenant.tenant, source=Source.from_bytes(uri.encode(), "own.txt"), source_uri=uri)
    connection.set_schema_to_public()
    return uri


def test_it_serves_tenants_through_the_asgi_server(asgi_server, alpha, beta, committed):
    """Alternating tenants over the server's pooled connections: each request sees its own schema."""
    tag = uuid.uuid4().hex[:8]
    uris = {t.slug: _own_atom(t, tag) for t in (alpha, beta)}
    for i in range(24):
        tenant, other = ((alpha, beta), (beta, alpha))[i % 2]
        auth = {"Authorization": f"Bearer {tenant.keys['read']}"}
        status, headers, body = _get(f"{asgi_server}/api/tenant", auth)
        assert status == 200 and body["slug"] == tenant.slug and headers["x-correlation-id"]
        status, _, atoms = _get(f"{asgi_server}/api/atoms?source_uri_prefix={tenant.slug}-only-{tag}", auth)
        assert [a["source_uri"] for a in atoms["results"]] == [uris[tenant.slug]]
        status, _, theirs = _get(f"{asgi_server}/api/atoms?source_uri_prefix={other.slug}-only-{tag}", auth)
        assert theirs["results"] == []


def test_it_carries_the_correlation_id_into_celery_tasks(celery_worker):
    from hartonomous import correlation
    from hartonomous.tasks import diagnostics

    token = correlation.set_id("corr-" + uuid.uuid4().hex[:8])
    try:
        result = diagnostics.delay().get(timeout=30)
        assert result["correlation_id"] == correlation.get()
    finally:
        correlation.reset(token)


async def _ws_messages(url: str, count: int, timeout: float = 10) -> list[dict]:
    import websockets

    async with websockets.connect(url) as ws:
        messages = [json.loads(await asyncio.wait_for(ws.recv(), timeout))]
        while len(messages) < count:
            messages.append(json.loads(await asyncio.wait_for(ws.recv(), timeout)))
        return messages


def test_it_streams_progress_to_the_tenants_dashboard_only(asgi_server, alpha, beta):
    ws_base = asgi_server.replace("http://", "ws://")

    async def scenario():
        mine = asyncio.create_task(_ws_messages(f"{ws_base}/ws/progress/?key={alpha.keys['read']}", 3))
        theirs = asyncio.create_task(_ws_messages(f"{ws_base}/ws/progress/?key={beta.keys['read']}", 2, timeout=3))
        await asyncio.sleep(1.0)
        await asyncio.to_thread(_run_job, alpha.slug)
        mine_result = await mine
        with pytest.raises((TimeoutError, asyncio.TimeoutError)):
            await theirs
        return mine_result

    messages = asyncio.run(scenario())
    assert messages[0] == {"type": "hello", "tenant": "alpha"}
    assert [m["state"] for m in messages[1:]] == ["started", "finished"]


def test_a_dashboard_that_waits_longer_than_the_layers_read_still_gets_progress(asgi_server, alpha):
    # the channel layer blocks 5 s per read: a Redis socket timeout at or under that dropped the socket
    ws_base = asgi_server.replace("http://", "ws://")

    async def scenario():
        mine = asyncio.create_task(_ws_messages(f"{ws_base}/ws/progress/?key={alpha.keys['read']}", 3, timeout=20))
        await asyncio.sleep(8.0)
        await asyncio.to_thread(_run_job, alpha.slug)
        return await mine

    assert [m.get("state") for m in asyncio.run(scenario())[1:]] == ["started", "finished"]


def _run_job(schema: str) -> None:
    with Progress(schema, "test-job", total=1, bar=False) as progress:
        progress.done = 1


def test_it_refuses_websockets_without_a_key(asgi_server):
    import websockets

    async def scenario():
        async with websockets.connect(asgi_server.replace("http://", "ws://") + "/ws/progress/") as ws:
            await ws.recv()

    with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
        asyncio.run(scenario())
    assert refused.value.response.status_code == 403


def test_schemathesis_finds_no_server_errors(asgi_server, committed, tmp_path):
    from hartonomous.onboarding import tenant_ensure

    fuzz = tenant_ensure(slug="fuzz", name="Fuzz", credits=1000)
    _, raw = api_key_create(tenant=fuzz, name="fuzz-" + uuid.uuid4().hex[:6], scopes=["read", "write", "generate", "admin"])
    report = tmp_path / "junit.xml"
    command = [
        sys.executable, "-m", "schemathesis.cli", "run", f"{asgi_server}/api/schema/",
        "--checks", "not_a_server_error", "--max-examples", os.environ.get("HARTONOMOUS_FUZZ_EXAMPLES", "30"),
        "-H", f"Authorization: Bearer {raw}", "--exclude-method", "DELETE",
        "--generation-deterministic", "--request-timeout", "20", "--report", "junit",
        "--report-junit-path", str(report),
    ]
    run = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-3000:]
