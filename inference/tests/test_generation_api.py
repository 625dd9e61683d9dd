"""POST /api/generate (JSON and Server-Sent Events), the AtomicStream reads, replay and retraction impact,
on the real SmolLM2 from atoms: through Django's test client, and against the real uvicorn server for
streaming (events arrive one by one; a client that goes away leaves a cancelled run with its steps)."""
from __future__ import annotations

import json
import time
from decimal import Decimal

import httpx
import pytest
from django.db import connection

from atoms.bulk import atom_ingest_texts
from atoms.models import Atom
from atoms.services import atom_delete, embed_atoms
from billing.models import CreditBalance
from inference.tests.test_generation import QUESTION, facts  # noqa: F401 (fixture)
from inference.tests.test_models import minilm, smol  # noqa: F401 (module fixtures)
from provenance.models import GenerationRun, GenerationStep
from tests.api_matrix import assert_error_shape

db = pytest.mark.django_db  # the live tests below run outside a transaction (their data must be committed)


def parse_sse(chunks) -> list[tuple[str, dict]]:
    """(event, data) pairs from the raw bytes of a text/event-stream body."""
    text = b"".join(chunks).decode()
    out = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        out.append((fields.get("event", "message"), json.loads(fields["data"])))
    return out


def generate(api, keys, **body):
    return api(keys.keys["generate"]).post("/api/generate", body)


# --------------------------------------------------------------------------------------------------
# through the test client
# --------------------------------------------------------------------------------------------------
@db
def test_it_answers_json_with_the_text_and_the_sources_mass(smol, alpha, facts, api):  # noqa: F811
    response = generate(api, alpha, model=smol.pk, prompt=QUESTION, k=2, max_tokens=6)
    assert response.status_code == 200, response.content[:500]
    body = response.json()
    assert "7431" in body["text"] and body["finish_reason"] in ("length", "stop", "eos")
    assert body["usage"]["completion_tokens"] == len(body["tokens"]) == 6
    assert body["sources"][0]["atom"] == facts[0] and body["sources"][0]["mass_total"] > 0
    assert body["ttft_ms"] > 0 and body["duration_ms"] >= body["ttft_ms"]
    connection.set_tenant(alpha.tenant)
    run = GenerationRun.objects.get(pk=body["run"])
    assert run.status == "completed" and run.tokens_out == 6 and run.text == body["text"]
    assert run.principal == f"api_key:{alpha.keys['generate'].split('_')[1]}" and run.correlation_id == response["X-Correlation-ID"]
    assert run.params["sampling"]["max_tokens"] == 6 and run.params["k"] == 2


@db
def test_it_takes_chat_messages_and_sampling_fields(smol, alpha, facts, api):  # noqa: F811
    response = generate(api, alpha, model=smol.pk, k=1, max_tokens=4, temperature=0.8, top_p=0.9, top_k=40,
                        seed=11, stop=["\n\n"], repetition_penalty=1.1,
                        messages=[{"role": "system", "content": "Answer briefly."},
                                  {"role": "user", "content": "Which port does Zorblax listen on?"}])
    assert response.status_code == 200, response.content[:500]
    connection.set_tenant(alpha.tenant)
    run = GenerationRun.objects.get(pk=response.json()["run"])
    assert run.messages[1]["role"] == "user" and run.seed == 11
    assert run.params["sampling"] | {"temperature": 0.8, "top_p": 0.9, "top_k": 40} == run.params["sampling"]


@db
def test_it_streams_server_sent_events_with_attributions(smol, alpha, facts, api):  # noqa: F811
    response = generate(api, alpha, model=smol.pk, prompt=QUESTION, k=2, max_tokens=5, stream=True)
    assert response.status_code == 200 and response.streaming
    assert response["Content-Type"].startswith("text/event-stream")
    assert response["Cache-Control"] == "no-cache" and response["X-Accel-Buffering"] == "no"
    assert response["X-Correlation-ID"]
    events = parse_sse(response.streaming_content)
    kinds = [k for k, _ in events]
    assert kinds == ["run"] + ["token"] * 5 + ["done"]
    assert all(d["type"] == k for k, d in events)
    tokens = [d for k, d in events if k == "token"]
    assert [t["position"] for t in tokens] == list(range(5))
    assert all(t["attributions"] and t["attributions"][0]["atom"] in facts for t in tokens)
    assert all(len(t["alternatives"]) == 5 for t in tokens)
    done = events[-1][1]
    assert "".join(t["text"] for t in tokens) == done["text"] and "7431" in done["text"]
    connection.set_tenant(alpha.tenant)
    assert GenerationRun.objects.get(pk=done["run"]).status == "completed"


@db
@pytest.mark.parametrize("read,kept", [(3, 2), (1, 0)])  # run + two tokens; the run event alone
def test_a_stream_read_in_part_leaves_a_cancelled_run_with_its_steps(smol, alpha, facts, api, read, kept):  # noqa: F811
    response = generate(api, alpha, model=smol.pk, prompt=QUESTION, k=1, max_tokens=40, stream=True)
    content = iter(response.streaming_content)
    first = [next(content) for _ in range(read)]
    # the client goes away: close the test client's wrapper of the body, which closes the response as a
    # WSGI server does (without closing the test's database connection)
    response._iterator.close()
    run_id = parse_sse(first)[0][1]["run"]
    connection.set_tenant(alpha.tenant)
    run = GenerationRun.objects.get(pk=run_id)
    # closed, never left "running", and no token decoded after the client went away
    assert (run.status, run.finish_reason) == ("cancelled", "disconnected")
    assert list(run.steps.values_list("position", flat=True)) == list(range(kept))


@db
def test_it_shows_a_run_with_its_sources_steps_and_attributions(smol, alpha, beta, facts, api):  # noqa: F811
    run_id = generate(api, alpha, model=smol.pk, prompt=QUESTION, k=2, max_tokens=4).json()["run"]
    body = api(alpha.keys["read"]).get(f"/api/generations/{run_id}").json()
    assert body["id"] == run_id and body["status"] == "completed" and body["tokens_out"] == 4
    assert [s["atom_id"] for s in body["sources"]][0] == facts[0] and body["sources"][0]["mass_total"] > 0
    assert [s["position"] for s in body["steps"]] == [0, 1, 2, 3]
    step = body["steps"][0]
    assert len(step["alternatives"]) == 5 and step["attributions"][0]["atom"] == step["top_atom_id"]
    assert_error_shape(api(beta.keys["read"]).get(f"/api/generations/{run_id}"), 404)


@db
def test_it_lists_runs_newest_first_with_a_cursor(smol, alpha, beta, facts, api):  # noqa: F811
    ids = [generate(api, alpha, model=smol.pk, prompt=QUESTION, k=0, max_tokens=1).json()["run"] for _ in range(3)]
    page = api(alpha.keys["read"]).get("/api/generations", {"limit": 2}).json()
    assert [r["id"] for r in page["results"]] == ids[::-1][:2] and page["next"]
    rest = api(alpha.keys["read"]).get(page["next"]).json()
    assert rest["results"][0]["id"] == ids[0]
    done = api(alpha.keys["read"]).get("/api/generations", {"status": "completed", "model": smol.pk}).json()
    assert set(ids) <= {r["id"] for r in done["results"]}
    assert not set(ids) & {r["id"] for r in api(beta.keys["read"]).get("/api/generations").json()["results"]}


@db
def test_replay_over_the_api_gives_the_same_tokens(smol, alpha, facts, api):  # noqa: F811
    run_id = generate(api, alpha, model=smol.pk, prompt="Tell me about penguins.", k=3, max_tokens=6,
                      temperature=0.9, top_p=0.95).json()["run"]
    response = api(alpha.keys["generate"]).post(f"/api/generations/{run_id}/replay")
    assert response.status_code == 201, response.content[:500]
    report = response.json()
    assert report["identical"] and report["context_identical"] and report["tokens_compared"] == 6
    assert report["replay_run"]["replay_of"] == run_id and report["replay"] != run_id


@db
def test_it_reports_the_runs_and_steps_that_drew_on_an_atom(smol, alpha, beta, facts, api):  # noqa: F811
    run_id = generate(api, alpha, model=smol.pk, prompt=QUESTION, k=2, max_tokens=6).json()["run"]
    body = api(alpha.keys["read"]).get(f"/api/atoms/{facts[0]}/generations").json()
    assert body["atom"] == facts[0] and [r["run"] for r in body["runs"]] == [run_id]
    run = body["runs"][0]
    assert run["share"] > 0.5 and run["steps_credited"] >= 1 and all(s["mass"] > 0 for s in run["steps"])
    assert body["total_steps_credited"] == run["steps_credited"]
    connection.set_tenant(alpha.tenant)
    sha = Atom.objects.get(pk=facts[0]).sha256
    assert api(alpha.keys["read"]).get(f"/api/atoms/{sha}/generations").json()["runs"] == body["runs"]
    limited = api(alpha.keys["read"]).get(f"/api/atoms/{facts[0]}/generations", {"steps_per_run": 0}).json()
    assert limited["runs"][0]["steps"] == [] and limited["runs"][0]["steps_credited"] == run["steps_credited"]
    assert_error_shape(api(beta.keys["read"]).get(f"/api/atoms/{sha}/generations"), 404)


BAD = [{"prompt": ""}, {"prompt": " \n "}, {"prompt": "x" * 40_000}, {"k": 33}, {"max_tokens": 0},
       {"temperature": -0.5}, {"top_p": 0}, {"stop": [""]}, {"knn_lambda": 1.5}, {"seed": -1},
       {"messages": [{"role": "user", "content": "q"}]}, {"bogus": True}]


@db
@pytest.mark.parametrize("bad", BAD)
def test_it_refuses_bad_input_and_opens_no_run(smol, alpha, api, bad):  # noqa: F811
    connection.set_tenant(alpha.tenant)
    before = GenerationRun.objects.count()
    for stream in (False, True):
        assert_error_shape(generate(api, alpha, **{"model": smol.pk, "prompt": QUESTION, "stream": stream, **bad}), 400)
    connection.set_tenant(alpha.tenant)
    assert GenerationRun.objects.count() == before


@db
def test_it_answers_404_402_422_and_400_before_streaming(smol, minilm, alpha, beta, api):  # noqa: F811
    connection.set_tenant(alpha.tenant)
    before = GenerationRun.objects.count()
    error = assert_error_shape(generate(api, alpha, model=987654321, prompt=QUESTION, stream=True), 404)
    assert error["code"] == "model_not_found"
    assert_error_shape(generate(api, beta, model=smol.pk, prompt=QUESTION, stream=True), 404)  # alpha's model
    assert_error_shape(generate(api, alpha, model=minilm.pk, prompt=QUESTION, stream=True), 400)  # an encoder
    overflow = assert_error_shape(generate(api, alpha, model=smol.pk, prompt="word " * 2500, k=0, stream=True), 422)
    assert overflow["code"] == "context_overflow"
    CreditBalance.objects.filter(tenant=alpha.tenant).update(balance=Decimal("0"))
    for stream in (False, True):
        error = assert_error_shape(generate(api, alpha, model=smol.pk, prompt=QUESTION, stream=stream), 402)
        assert error["code"] == "insufficient_credits"
    connection.set_tenant(alpha.tenant)
    assert GenerationRun.objects.count() == before


# --------------------------------------------------------------------------------------------------
# against the real ASGI server (uvicorn): committed data, real sockets
# --------------------------------------------------------------------------------------------------
LIVE_FACTS = ["The Vellichor relay station transmits on frequency 9182 kilohertz every night.",
              "Mossback turtles in the Ondrel marshes hibernate beneath the peat for five months."]
LIVE_QUESTION = "The Vellichor relay station transmits on frequency"


@pytest.fixture(scope="module")
def live_facts(django_db_setup, django_db_blocker):
    """Committed atoms (visible to the server) tagged so that only these are retrieved; soft-deleted after
    (and brought back by the next module that asks for them: ingestion deduplicates by content)."""
    from tests.fixtures import django_db_setup_tenants

    alpha = django_db_setup_tenants["alpha"]
    tag = {"suite": "generation-api-live"}
    with django_db_blocker.unblock():
        connection.set_tenant(alpha.tenant)
        atom_ingest_texts(tenant=alpha.tenant, texts=LIVE_FACTS, metadata=tag)
        atoms = Atom.objects.filter(text__in=LIVE_FACTS, metadata__contains=tag)
        atoms.update(deleted_at=None)
        by_text = dict(atoms.values_list("text", "id"))
        embed_atoms(atom_ids=list(by_text.values()))
        connection.set_schema_to_public()
    yield {"ids": [by_text[t] for t in LIVE_FACTS], "filter": tag}
    with django_db_blocker.unblock():
        connection.set_tenant(alpha.tenant)
        for atom in Atom.objects.filter(pk__in=by_text.values()):
            atom_delete(atom=atom)
        connection.set_schema_to_public()


def _live_body(smol, live_facts, **extra) -> dict:  # noqa: F811
    return {"model": smol.pk, "prompt": LIVE_QUESTION, "k": 2, "metadata_filter": live_facts["filter"], **extra}


def _runs(alpha) -> GenerationRun:
    connection.set_tenant(alpha.tenant)
    return GenerationRun.objects.all()


def _sse_events(response):
    """(event, data, arrival time) as each event arrives."""
    lines = []
    for line in response.iter_lines():
        if line:
            lines.append(line)
            continue
        fields = dict(x.split(": ", 1) for x in lines)
        lines = []
        yield fields.get("event", "message"), json.loads(fields["data"]), time.monotonic()


@pytest.mark.live
def test_tokens_arrive_one_by_one_before_the_run_ends(asgi_server, smol, alpha, live_facts, committed):  # noqa: F811
    headers = {"Authorization": f"Bearer {alpha.keys['generate']}"}
    body = _live_body(smol, live_facts, max_tokens=12, stream=True)
    with httpx.stream("POST", f"{asgi_server}/api/generate", json=body, headers=headers, timeout=120) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache" and response.headers["x-accel-buffering"] == "no"
        assert response.headers["x-correlation-id"]
        events, status_at_first_token = [], None
        for kind, data, at in _sse_events(response):
            events.append((kind, data, at))
            if kind == "token" and status_at_first_token is None:
                # the first token is in our hands while the server is still decoding (the run is open)
                status_at_first_token = _runs(alpha).get(pk=events[0][1]["run"]).status
    kinds = [k for k, _, _ in events]
    assert kinds == ["run"] + ["token"] * (len(kinds) - 2) + ["done"] and len(kinds) == 14
    assert status_at_first_token == "running"
    first_token_at, done_at = events[1][2], events[-1][2]
    assert done_at - first_token_at > 0.05  # spread over the decode, not one buffered burst
    tokens = [d for k, d, _ in events if k == "token"]
    assert [t["position"] for t in tokens] == list(range(12))
    assert tokens[0]["attributions"] and {a["atom"] for t in tokens for a in t["attributions"]} <= set(live_facts["ids"])
    done = events[-1][1]
    assert "9182" in done["text"] and done["sources"][0]["atom"] == live_facts["ids"][0]
    run = _runs(alpha).get(pk=done["run"])
    assert run.status == "completed" and run.tokens_out == 12


@pytest.mark.live
def test_a_client_that_disconnects_leaves_a_cancelled_run_with_its_steps(asgi_server, smol, alpha, live_facts,  # noqa: F811
                                                                         committed):
    headers = {"Authorization": f"Bearer {alpha.keys['generate']}"}
    body = _live_body(smol, live_facts, max_tokens=200, stream=True)
    got = []
    with httpx.stream("POST", f"{asgi_server}/api/generate", json=body, headers=headers, timeout=120) as response:
        for kind, data, _ in _sse_events(response):
            got.append((kind, data))
            if len(got) == 3:  # run + two tokens, then hang up
                break
    run_id = got[0][1]["run"]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        run = _runs(alpha).get(pk=run_id)
        if run.status != "running":
            break
        time.sleep(0.1)
    assert (run.status, run.finish_reason) == ("cancelled", "disconnected")
    positions = list(GenerationStep.objects.filter(run=run).values_list("position", flat=True))
    assert 2 <= len(positions) < 50 and positions == list(range(len(positions))) == list(range(run.tokens_out))
    assert run.finished_at is not None and run.text


@pytest.mark.live
def test_bad_requests_to_the_server_get_the_error_shape_and_no_run(asgi_server, smol, alpha, live_facts,  # noqa: F811
                                                                   committed):
    headers = {"Authorization": f"Bearer {alpha.keys['generate']}"}
    before = _runs(alpha).count()
    cases = [({"prompt": ""}, 400), ({"prompt": "y" * 40_000}, 400), ({"model": 987654321}, 404),
             ({"max_tokens": 0}, 400), ({"temperature": "hot"}, 400), ({"top_p": 7}, 400),
             ({"prompt": "word " * 2500, "k": 0}, 422)]
    for change, status in cases:
        body = {**_live_body(smol, live_facts, stream=True, max_tokens=4), **change}
        response = httpx.post(f"{asgi_server}/api/generate", json=body, headers=headers, timeout=120)
        assert response.status_code == status, (change, response.text[:300])
        assert response.headers["content-type"].startswith("application/json")
        error = response.json()["error"]
        assert set(error) == {"code", "message", "details", "correlation_id"}
        assert error["correlation_id"] == response.headers["x-correlation-id"]
    balance = CreditBalance.objects.get(tenant=alpha.tenant).balance
    CreditBalance.objects.filter(tenant=alpha.tenant).update(balance=Decimal("0"))
    try:
        response = httpx.post(f"{asgi_server}/api/generate", json=_live_body(smol, live_facts, stream=True),
                              headers=headers, timeout=60)
    finally:
        CreditBalance.objects.filter(tenant=alpha.tenant).update(balance=balance)
    assert response.status_code == 402 and response.json()["error"]["code"] == "insufficient_credits"
    assert _runs(alpha).count() == before
