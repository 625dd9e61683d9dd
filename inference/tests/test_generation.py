"""Generation with attention over the tenant's atoms and the AtomicStream, on the real SmolLM2 from atoms."""
from __future__ import annotations

import uuid
from decimal import Decimal

import pytest
from django.db import connection

from atoms.models import Atom
from billing.models import CreditBalance, UsageEvent
from hartonomous.errors import NotFound, PaymentRequired, Unprocessable, ValidationFailed
from inference.generation import FIRST_FLUSH as FLUSH
from inference.generation import GenerationSpec, generation_start
from inference.replay import generation_replay
from inference.runtime import GGUFTokenizer, Llama, SamplingParams, generate
from inference.tests.helpers import text_atoms
from inference.tests.test_models import minilm, smol, smol_file  # noqa: F401 (module fixtures)
from provenance.models import GenerationRun, GenerationSource, GenerationStep, ProvEdge, ProvNode
from provenance.selectors import generations_for_atom
from provenance.services import atom_retract

pytestmark = pytest.mark.django_db

FACTS = ["The Zorblax protocol listens on port 7431 and encrypts its control channel with ChaCha20.",
         "Penguins live in the southern hemisphere; emperor penguins breed during the Antarctic winter.",
         "The Quillfeather library renders vector maps in the browser using WebGL shaders."]
QUESTION = "The Zorblax protocol listens on port"


@pytest.fixture
def facts(alpha):
    return text_atoms(alpha.tenant, FACTS)


def run_all(stream) -> list[dict]:
    return list(stream)


def test_it_puts_the_best_atoms_in_context_and_credits_the_source_it_copies(smol, alpha, facts):  # noqa: F811
    stream = generation_start(tenant=alpha.tenant, spec=GenerationSpec(model=smol, prompt=QUESTION, k=2,
                                                                         sampling={"max_tokens": 6}))
    events = run_all(stream)
    start, tokens, done = events[0], events[1:-1], events[-1]
    assert start["type"] == "run" and start["sources"][0]["atom"] == facts[0] and len(start["sources"]) == 2
    assert [e["type"] for e in tokens] == ["token"] * len(tokens) and done["type"] == "done"
    assert "7431" in done["text"]
    # the digits of the port are copied from the Zorblax atom: it is their top source
    digit_steps = [e for e in tokens if e["token_text"].strip().isdigit()]
    assert digit_steps and all(e["attributions"][0]["atom"] == facts[0] for e in digit_steps)
    run = GenerationRun.objects.get(pk=done["run"])
    assert run.status == "completed" and run.tokens_out == len(tokens) == run.steps.count()
    assert run.model_digest == smol.root.sha256 and run.seed == run.params["sampling"]["seed"]
    top = GenerationSource.objects.get(run=run, atom_id=facts[0])
    assert top.rank == 0 and top.mass_total > 0 and top.top_steps >= len(digit_steps)
    assert top.history_id == Atom.history.filter(id=facts[0]).latest("history_id").history_id
    step = GenerationStep.objects.get(run=run, position=0)
    assert len(step.alternatives) == 5 and step.alternatives[0]["logprob"] >= step.alternatives[-1]["logprob"]


def test_the_tokens_are_the_runtimes_tokens_on_the_same_context(smol, alpha, facts):  # noqa: F811
    stream = generation_start(tenant=alpha.tenant, spec=GenerationSpec(model=smol, prompt=QUESTION, k=3,
                                                                         sampling={"max_tokens": 10}))
    done = run_all(stream)[-1]
    gguf = smol_file()
    llama, tok = Llama.from_gguf(gguf, n_ctx=2048), GGUFTokenizer(gguf.metadata)
    want = [s.token for s in generate(llama, tok, stream.ctx.tokens, SamplingParams(max_tokens=10))]
    assert done["tokens"] == want


def test_it_records_usage_per_batch_attributed_to_atoms_and_the_graph(smol, alpha, facts):  # noqa: F811
    done = run_all(generation_start(tenant=alpha.tenant, spec=GenerationSpec(model=smol, prompt=QUESTION, k=2,
                                                                               sampling={"max_tokens": 20})))[-1]
    events = UsageEvent.objects.filter(tenant=alpha.tenant, idempotency_key__startswith=f"generate:{alpha.slug}:{done['run']}:")
    assert sum(e.quantity for e in events) == done["usage"]["total_tokens"]
    assert any(str(facts[0]) in e.attributes.get("atoms", {}) for e in events)
    run_node = ProvNode.objects.get(kind="run", ref=str(done["run"]))
    edge = ProvEdge.objects.get(source=run_node, type="wasDerivedFrom", target__ref=str(facts[0]))
    assert 0.5 < edge.weight <= 1.0


def test_closing_the_stream_keeps_the_steps_and_marks_the_run(smol, alpha, facts):  # noqa: F811
    stream = generation_start(tenant=alpha.tenant, spec=GenerationSpec(model=smol, prompt=QUESTION, k=2,
                                                                         sampling={"max_tokens": 40}))
    it = iter(stream)
    got = [next(it) for _ in range(4)]  # run + 3 tokens
    stream.close()
    run = GenerationRun.objects.get(pk=got[0]["run"])
    assert (run.status, run.finish_reason) == ("cancelled", "disconnected")
    assert list(run.steps.values_list("position", flat=True)) == [0, 1, 2]
    assert ProvNode.objects.filter(kind="run", ref=str(run.pk)).exists()

    for read in (0, 1):  # never read; only its run event read: closed, and no token decoded
        stream = generation_start(tenant=alpha.tenant, spec=GenerationSpec(model=smol, prompt=QUESTION, k=1,
                                                                             sampling={"max_tokens": 40}))
        [next(stream) for _ in range(read)]
        stream.close()
        run = GenerationRun.objects.get(pk=stream.run.pk)
        assert (run.status, run.finish_reason, run.steps.count()) == ("cancelled", "disconnected", 0)


def test_it_stops_when_the_credits_run_out(smol, alpha, facts):  # noqa: F811
    CreditBalance.objects.filter(tenant=alpha.tenant).update(balance=Decimal("0.0001"))
    done = run_all(generation_start(tenant=alpha.tenant, spec=GenerationSpec(model=smol, prompt=QUESTION, k=1,
                                                                               sampling={"max_tokens": 64})))[-1]
    assert done["finish_reason"] == "credits" and len(done["tokens"]) <= FLUSH
    assert GenerationRun.objects.get(pk=done["run"]).finish_reason == "credits"
    CreditBalance.objects.filter(tenant=alpha.tenant).update(balance=Decimal("0"))
    with pytest.raises(PaymentRequired):
        generation_start(tenant=alpha.tenant, spec=GenerationSpec(model=smol, prompt=QUESTION))


def test_replay_gives_the_same_tokens_even_after_the_source_is_deleted(smol, alpha, facts):  # noqa: F811
    spec = GenerationSpec(model=smol, prompt="Tell me about penguins.", k=3,
                          sampling={"temperature": 0.9, "top_p": 0.95, "max_tokens": 12})
    done = run_all(generation_start(tenant=alpha.tenant, spec=spec))[-1]
    run = GenerationRun.objects.get(pk=done["run"])
    Atom.objects.filter(pk=facts[1]).update(deleted_at=run.created_at)  # soft-deleted since
    report = generation_replay(tenant=alpha.tenant, run=run)
    assert report.identical and report.context_identical and report.compared == len(done["tokens"])
    assert report.replay.replay_of_id == run.pk and report.replay.pk != run.pk


def test_replay_reports_a_changed_model_or_source(smol, alpha, facts):  # noqa: F811
    done = run_all(generation_start(tenant=alpha.tenant, spec=GenerationSpec(model=smol, prompt=QUESTION, k=1,
                                                                               sampling={"max_tokens": 2})))[-1]
    run = GenerationRun.objects.get(pk=done["run"])
    GenerationSource.objects.filter(run=run).update(sha256="0" * 64)
    with pytest.raises(Unprocessable):
        generation_replay(tenant=alpha.tenant, run=run)
    GenerationRun.objects.filter(pk=run.pk).update(model_digest="f" * 64)
    run.refresh_from_db()
    with pytest.raises(Unprocessable):
        generation_replay(tenant=alpha.tenant, run=run)


def test_retraction_impact_names_the_runs_and_steps_that_drew_on_the_atom(smol, alpha, facts):  # noqa: F811
    done = run_all(generation_start(tenant=alpha.tenant, spec=GenerationSpec(model=smol, prompt=QUESTION, k=2,
                                                                               sampling={"max_tokens": 6})))[-1]
    impact = generations_for_atom(atom_id=facts[0])
    assert [r["run"] for r in impact] == [done["run"]]
    assert impact[0]["share"] > 0.5 and impact[0]["steps_credited"] >= 1
    assert all(s["mass"] > 0 for s in impact[0]["steps"])
    retraction = atom_retract(tenant=alpha.tenant, atom=Atom.objects.get(pk=facts[0]), reason="wrong port")
    assert any(d["kind"] == "run" and d["ref"] == str(done["run"]) and d["mass"] > 0.5 for d in retraction.dependants)
    assert ProvNode.objects.get(kind="run", ref=str(done["run"])).flagged_at is not None


def test_another_tenant_retrieves_and_sees_nothing_of_alpha(smol, alpha, beta, facts):  # noqa: F811
    done = run_all(generation_start(tenant=alpha.tenant, spec=GenerationSpec(model=smol, prompt=QUESTION, k=2,
                                                                               sampling={"max_tokens": 2})))[-1]
    connection.set_tenant(beta.tenant)
    assert generations_for_atom(atom_id=facts[0]) == []
    assert not GenerationRun.objects.filter(pk=done["run"]).exists()
    with pytest.raises(NotFound):  # alpha's atoms by id are not beta's; alpha's model is not in beta either
        generation_start(tenant=beta.tenant, spec=GenerationSpec(model=smol, prompt=QUESTION, source_ids=[facts[0]]))


@pytest.mark.parametrize("bad", [
    {"prompt": ""}, {"prompt": "   "}, {"prompt": "x" * 40_000}, {"prompt": None},
    {"prompt": "q", "messages": [{"role": "user", "content": "q"}]},
    {"prompt": None, "messages": [{"role": "wizard", "content": "q"}]}, {"prompt": None, "messages": []},
    {"k": -1}, {"k": 33}, {"k": "3"}, {"context_budget": 99_999}, {"knn_lambda": 1.5},
    {"sampling": {"temperature": -1}}, {"sampling": {"top_p": 0}}, {"sampling": {"max_tokens": 0}},
    {"sampling": {"bogus": 1}}, {"sampling": "hot"},
])
def test_it_refuses_bad_input_with_a_clear_error(smol, alpha, bad):  # noqa: F811
    connection.set_tenant(alpha.tenant)
    before = GenerationRun.objects.count()
    spec = GenerationSpec(model=smol, **{"prompt": QUESTION, **bad})
    with pytest.raises(ValidationFailed):
        generation_start(tenant=alpha.tenant, spec=spec)
    assert GenerationRun.objects.count() == before


def test_it_refuses_an_encoder_and_an_overflowing_prompt(smol, minilm, alpha):  # noqa: F811
    connection.set_tenant(alpha.tenant)
    with pytest.raises(ValidationFailed):
        generation_start(tenant=alpha.tenant, spec=GenerationSpec(model=minilm, prompt=QUESTION))
    with pytest.raises(Unprocessable):
        generation_start(tenant=alpha.tenant, spec=GenerationSpec(model=smol, prompt="word " * 2500, k=0))


def test_knn_lm_interpolation_copies_from_the_datastore_and_replays(smol, alpha, facts):  # noqa: F811
    from inference.knn import knn_datastore_build

    tag = uuid.uuid4().hex[:8].translate(str.maketrans("0123456789", "ghijklmnop"))  # no digits: a port is digits
    mine = text_atoms(alpha.tenant, [f"{t} ({tag})" for t in FACTS], metadata={"knn_test": tag})
    prompt = QUESTION

    def port(lam: float) -> dict:
        spec = GenerationSpec(model=smol, prompt=prompt, k=0, knn_lambda=lam, sampling={"max_tokens": 5})
        return run_all(generation_start(tenant=alpha.tenant, spec=spec))[-1]

    with pytest.raises(Unprocessable):
        port(0.9)  # no datastore yet
    only = {"knn_test": tag}  # this test's atoms, whatever other tests left committed in alpha
    store = knn_datastore_build(tenant=alpha.tenant, model=smol, metadata=only)
    assert store.metadata["kind"] == "knn-datastore" and store.metadata["atoms"] == len(FACTS)
    assert knn_datastore_build(tenant=alpha.tenant, model=smol, metadata=only).pk == store.pk  # same bytes
    plain, knn = port(0.0), port(0.9)
    assert "7431" not in plain["text"] and "7431" in knn["text"]
    run = GenerationRun.objects.get(pk=knn["run"])
    assert run.params["knn_datastore"] == store.pk and run.params["knn_lambda"] == 0.9
    assert run.params["knn_settings"] == {"k": 8, "temperature": 0.01, "adaptive": [0.97, 0.02]}  # replayed as such
    assert generation_replay(tenant=alpha.tenant, run=run).identical
    assert ProvEdge.objects.filter(source__ref=str(store.pk), type="wasDerivedFrom", target__ref=str(mine[0])).exists()


def test_the_knn_build_command_reports_the_datastore_and_refuses_bad_input(smol, minilm, alpha, facts):  # noqa: F811
    from io import StringIO

    from django.core.management import CommandError, call_command

    out = StringIO()
    call_command("knn_build", "--tenant", alpha.slug, "--model", str(smol.pk), "--no-progress", stdout=out)
    assert "datastore atom" in out.getvalue() and "entries" in out.getvalue()
    for args in (["--model", "no-such-model"], ["--model", str(minilm.pk)], ["--model", str(smol.pk), "--max-atoms", "0"]):
        with pytest.raises(CommandError):
            call_command("knn_build", "--tenant", alpha.slug, "--no-progress", *args, stdout=StringIO())
    with pytest.raises(CommandError):
        call_command("knn_build", "--tenant", "nobody", "--model", "1", stdout=StringIO())


def test_runs_left_running_are_reaped_with_their_recorded_steps(smol, alpha, beta, facts):  # noqa: F811
    from datetime import timedelta

    from provenance.atomicstream import generation_runs_reap

    stream = generation_start(tenant=alpha.tenant, spec=GenerationSpec(model=smol, prompt=QUESTION, k=2,
                                                                         sampling={"max_tokens": 40}))
    events = iter(stream)
    for _ in range(FLUSH + 3):   # run event + a flushed batch + some buffered tokens, then the process "dies"
        next(events)
    run = GenerationRun.objects.get(pk=stream.run.pk)
    assert run.status == "running" and run.steps.count() == FLUSH
    assert generation_runs_reap(tenant=alpha.tenant) == []  # not old yet
    GenerationRun.objects.filter(pk=run.pk).update(created_at=run.created_at - timedelta(hours=1))
    assert generation_runs_reap(tenant=beta.tenant) == []   # another tenant's reaper sees nothing of alpha
    assert generation_runs_reap(tenant=alpha.tenant) == [run.pk]
    run.refresh_from_db()
    assert (run.status, run.finish_reason, run.tokens_out) == ("cancelled", "abandoned", FLUSH)
    assert GenerationSource.objects.get(run=run, atom_id=facts[0]).mass_total > 0
    assert ProvNode.objects.filter(kind="run", ref=str(run.pk)).exists()
    stream.close()  # the "dead" stream finishing late changes nothing: the first close wins
    run.refresh_from_db()
    assert (run.status, run.finish_reason) == ("cancelled", "abandoned")
    assert ProvEdge.objects.filter(source__kind="activity", source__ref=f"generate:{run.pk}", type="used").count() == 2


def test_top_tokens_agree_with_a_full_sort():
    import numpy as np

    from inference.generation import top_tokens

    rng = np.random.default_rng(3)
    for spread in (0.1, 3.0, 40.0):  # a flat, a normal and a very peaked distribution
        x = (rng.standard_normal(49152) * spread).astype(np.float32)
        for n in (1, 5, 20):
            assert top_tokens(x, n).tolist() == np.argsort(-x, kind="stable")[:n].tolist()
    x = np.full(10, -5.0, np.float32)
    x[7] = 100.0  # one spike: the rest are far below the thresholds
    assert top_tokens(x, 3).tolist()[0] == 7 and len(top_tokens(x, 3)) == 3


def test_the_api_queues_a_knn_build_and_the_task_builds_it(smol, minilm, alpha, api, facts,  # noqa: F811
                                                             django_capture_on_commit_callbacks):
    from inference.tasks import knn_build_task

    with django_capture_on_commit_callbacks() as queued:
        r = api(alpha.keys["write"]).post(f"/api/models/{smol.pk}/knn", {"max_atoms": 50})
    assert r.status_code == 202 and r.json()["status"] == "queued" and len(queued) == 1
    assert api(alpha.keys["write"]).post(f"/api/models/{minilm.pk}/knn", {}).status_code == 400  # an encoder
    connection.set_tenant(alpha.tenant)
    out = knn_build_task.apply((alpha.slug, smol.pk, 50, 200_000, None)).get()
    assert out["kind"] == "knn-datastore" and Atom.objects.filter(pk=out["datastore"]).exists()
