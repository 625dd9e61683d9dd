"""/ws/generate/ on the real ASGI server: tokens with attributions, bad input, disconnects, another tenant."""
from __future__ import annotations

import asyncio
import json
import time
import uuid

import pytest
from django.db import connection
from django_tenants.utils import schema_context

from atoms.bulk import atom_ingest_texts
from atoms.models import Atom
from atoms.services import atom_delete, embed_atoms
from inference.models import Model
from inference.tests.test_models import smol  # noqa: F401 (module fixture)
from provenance.models import GenerationRun

pytestmark = pytest.mark.live


@pytest.fixture
def facts(alpha, committed):
    """Committed atoms (the server's connections must see them) with a tag of their own; soft-deleted after."""
    tag = uuid.uuid4().hex[:8]
    texts = [f"The Vantrel-{tag} relay listens on port 6182 and signs its frames with Ed25519.",
             f"Herons-{tag} nest in colonies near lakes and hunt fish in shallow water."]
    connection.set_tenant(alpha.tenant)
    ids = atom_ingest_texts(tenant=alpha.tenant, texts=texts, metadata={"ws_test": tag}).new_ids
    embed_atoms(atom_ids=ids)
    by_text = dict(Atom.objects.filter(pk__in=ids).values_list("text", "id"))
    connection.set_schema_to_public()
    yield {"tag": tag, "ids": [by_text[t] for t in texts], "question": f"The Vantrel-{tag} relay listens on port"}
    with schema_context(alpha.slug):
        for atom in Atom.objects.filter(pk__in=ids):
            atom_delete(atom=atom)


def ws_url(server: str, key: str) -> str:
    return server.replace("http://", "ws://") + f"/ws/generate/?key={key}"


async def converse(url: str, requests: list, *, until=("done", "error"), timeout: float = 60) -> list[list[dict]]:
    """Send each request in turn (a str is sent raw), collecting the events up to done/error of each."""
    import websockets

    answers = []
    async with websockets.connect(url) as ws:
        for request in requests:
            await ws.send(request if isinstance(request, str) else json.dumps(request))
            events = []
            while not events or events[-1]["type"] not in until:
                events.append(json.loads(await asyncio.wait_for(ws.recv(), timeout)))
            answers.append(events)
    return answers


def runs_in(slug: str) -> int:
    with schema_context(slug):
        return GenerationRun.objects.count()


def test_it_streams_tokens_with_their_attributions(asgi_server, smol, alpha, facts):  # noqa: F811
    request = {"model": smol.pk, "prompt": facts["question"], "k": 2, "max_tokens": 6,
               "metadata_filter": {"ws_test": facts["tag"]}}
    [events] = asyncio.run(converse(ws_url(asgi_server, alpha.keys["generate"]), [request]))
    start, tokens, done = events[0], events[1:-1], events[-1]
    assert start["type"] == "run" and start["model"] == smol.pk and start["sources"][0]["atom"] == facts["ids"][0]
    assert tokens and all(e["type"] == "token" for e in tokens) and done["type"] == "done"
    assert [e["position"] for e in tokens] == list(range(len(tokens)))
    assert "6182" in done["text"] and done["text"] == "".join(e["text"] for e in tokens)
    digits = [e for e in tokens if e["token_text"].strip().isdigit()]
    assert digits and all(e["attributions"][0]["atom"] == facts["ids"][0] for e in digits)
    assert all(len(e["alternatives"]) == 5 for e in tokens)
    with schema_context(alpha.slug):
        run = GenerationRun.objects.get(pk=start["run"])
        assert (run.status, run.tokens_out, run.text) == ("completed", len(tokens), done["text"])
        assert run.principal.startswith("api_key:") and run.correlation_id


def test_it_answers_bad_input_with_the_error_shape_and_records_nothing(asgi_server, smol, alpha, facts):  # noqa: F811
    good = {"model": smol.pk, "prompt": facts["question"], "max_tokens": 2}
    bad = ["not json", "[1, 2]", {"prompt": "hi"}, {**good, "model": 10**9}, {**good, "model": True},
           {**good, "prompt": ""}, {**good, "prompt": "   "}, {**good, "prompt": "x" * 40_000},
           {**good, "messages": [{"role": "user", "content": "hi"}]}, {**good, "k": -1}, {**good, "max_tokens": 0},
           {**good, "temperature": "hot"}, {**good, "bogus": 1}, {**good, "source_ids": ["a"]},
           {**good, "type": "dance"}, {**good, "model": 10**30}, {**good, "max_tokens": 5000}]
    before = runs_in(alpha.slug)
    answers = asyncio.run(converse(ws_url(asgi_server, alpha.keys["generate"]), bad))
    for request, events in zip(bad, answers, strict=True):
        assert len(events) == 1, request
        error = events[0]
        assert error["type"] == "error" and set(error["error"]) >= {"code", "message", "details"}, error
        assert isinstance(error["error"]["message"], str) and error["error"]["message"]
    codes = [events[0]["error"]["code"] for events in answers]
    assert codes[3] == "not_found" and codes[-1] == "context_overflow"
    assert codes[-2] == "not_found" and set(codes[:3] + codes[4:-2]) == {"validation_error"}
    assert runs_in(alpha.slug) == before


def test_it_closes_the_run_as_disconnected_when_the_client_goes(asgi_server, smol, alpha, facts):  # noqa: F811
    import websockets

    async def scenario():
        async with websockets.connect(ws_url(asgi_server, alpha.keys["generate"])) as ws:
            await ws.send(json.dumps({"model": smol.pk, "prompt": facts["question"], "k": 2, "max_tokens": 200,
                                      "temperature": 0.8, "seed": 3}))
            return [json.loads(await asyncio.wait_for(ws.recv(), 60)) for _ in range(3)]  # run + 2 tokens

    got = asyncio.run(scenario())
    assert [e["type"] for e in got] == ["run", "token", "token"]
    deadline = time.monotonic() + 30
    with schema_context(alpha.slug):
        while time.monotonic() < deadline:
            run = GenerationRun.objects.get(pk=got[0]["run"])
            if run.status != "running":
                break
            time.sleep(0.2)
        assert (run.status, run.finish_reason) == ("cancelled", "disconnected")
        positions = list(run.steps.values_list("position", flat=True))
        assert 2 <= len(positions) < 200 and positions == list(range(len(positions))) == list(range(run.tokens_out))


def test_it_cancels_on_request_and_refuses_a_second_generation_meanwhile(asgi_server, smol, alpha, facts):  # noqa: F811
    import websockets

    async def scenario():
        async with websockets.connect(ws_url(asgi_server, alpha.keys["generate"])) as ws:
            await ws.send(json.dumps({"model": smol.pk, "prompt": facts["question"], "max_tokens": 200, "k": 1}))
            first = [json.loads(await asyncio.wait_for(ws.recv(), 60)) for _ in range(2)]
            await ws.send(json.dumps({"model": smol.pk, "prompt": "again"}))
            await ws.send(json.dumps({"type": "cancel"}))
            rest = []
            while not rest or rest[-1]["type"] != "cancelled":
                rest.append(json.loads(await asyncio.wait_for(ws.recv(), 60)))
            # the socket is usable again after the cancel
            await ws.send(json.dumps({"model": smol.pk, "prompt": facts["question"], "max_tokens": 1, "k": 0}))
            again = []
            while not again or again[-1]["type"] != "done":
                again.append(json.loads(await asyncio.wait_for(ws.recv(), 60)))
            return first, rest, again

    first, rest, again = asyncio.run(scenario())
    errors = [e for e in rest if e["type"] == "error"]
    assert [e["error"]["code"] for e in errors] == ["conflict"]
    assert rest[-1] == {"type": "cancelled", "run": first[0]["run"], "finish_reason": "disconnected"}
    assert all(e["type"] == "token" for e in rest[:-1] if e["type"] != "error")
    assert [e["type"] for e in again] == ["run", "token", "done"]
    with schema_context(alpha.slug):
        deadline = time.monotonic() + 30
        while GenerationRun.objects.get(pk=first[0]["run"]).status == "running" and time.monotonic() < deadline:
            time.sleep(0.2)
        run = GenerationRun.objects.get(pk=first[0]["run"])
        assert (run.status, run.finish_reason) == ("cancelled", "disconnected") and run.tokens_out < 200


def test_another_tenant_cannot_use_alphas_model_or_atoms(asgi_server, smol, alpha, beta, facts):  # noqa: F811
    with schema_context(beta.slug):
        assert not Model.objects.filter(pk=smol.pk).exists()
    before = runs_in(beta.slug)
    request = {"model": smol.pk, "prompt": facts["question"], "source_ids": facts["ids"], "max_tokens": 2}
    [events] = asyncio.run(converse(ws_url(asgi_server, beta.keys["generate"]), [request]))
    assert [e["type"] for e in events] == ["error"] and events[0]["error"]["code"] == "not_found"
    [events] = asyncio.run(converse(ws_url(asgi_server, beta.keys["generate"]), [{**request, "model": smol.name}]))
    assert events[0]["error"]["code"] == "not_found"
    assert runs_in(beta.slug) == before
    # and alpha's runs are not in beta's schema
    [events] = asyncio.run(converse(ws_url(asgi_server, alpha.keys["generate"]), [request]))
    assert events[-1]["type"] == "done"
    with schema_context(beta.slug):
        assert not GenerationRun.objects.filter(pk=events[0]["run"], model_id=smol.pk).exists()


def test_it_refuses_sockets_without_a_generate_key(asgi_server, alpha):
    import websockets

    async def scenario(url):
        async with websockets.connect(url) as ws:
            await ws.recv()

    base = asgi_server.replace("http://", "ws://") + "/ws/generate/"
    for url in (base, f"{base}?key=hk_not-a-key", f"{base}?key={alpha.keys['read']}"):
        with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
            asyncio.run(scenario(url))
        assert refused.value.response.status_code == 403
