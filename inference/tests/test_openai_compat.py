"""The OpenAI-compatible POST /v1/chat/completions: its shape through Django's test client, and the real
`openai` Python client against the real uvicorn server (non-stream, stream, errors)."""
from __future__ import annotations

import json
from decimal import Decimal

import openai
import pytest
from django.db import connection

from billing.models import CreditBalance
from inference.tests.test_generation import facts  # noqa: F401 (fixture)
from inference.tests.test_generation_api import live_facts  # noqa: F401 (module fixture)
from inference.tests.test_models import smol  # noqa: F401 (module fixture)
from provenance.models import GenerationRun
from tests.api_matrix import assert_error_shape

db = pytest.mark.django_db  # the live tests run outside a transaction (their data must be committed)

ASK = [{"role": "system", "content": "Answer with the number only."},
       {"role": "user", "content": "Which port does the Zorblax protocol listen on?"}]


def chat(api, keys, **body):
    return api(keys.keys["generate"]).post("/v1/chat/completions", body)


@db
def test_it_answers_a_chat_completion_with_our_extension(smol, alpha, facts, api):  # noqa: F811
    response = chat(api, alpha, model="smollm2", messages=ASK, max_tokens=16, k=2)
    assert response.status_code == 200, response.content[:500]
    body = response.json()
    assert body["object"] == "chat.completion" and body["model"] == "smollm2"
    choice = body["choices"][0]
    assert choice["index"] == 0 and choice["message"]["role"] == "assistant" and "7431" in choice["message"]["content"]
    assert choice["finish_reason"] in ("stop", "length")
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] and usage["completion_tokens"] <= 16
    ext = body["hartonomous"]
    assert body["id"] == f"chatcmpl-{ext['run']}" and ext["sources"][0]["atom"] == facts[0]
    assert ext["sources"][0]["mass_total"] > 0
    connection.set_tenant(alpha.tenant)
    run = GenerationRun.objects.get(pk=ext["run"])
    assert run.messages == ASK and run.text == choice["message"]["content"]


@db
def test_it_takes_the_model_by_id_or_name_and_text_parts(smol, alpha, facts, api):  # noqa: F811
    parts = [{"role": "user", "content": [{"type": "text", "text": "Which port does "},
                                          {"type": "text", "text": "Zorblax listen on?"}]}]
    for model in (smol.pk, str(smol.pk), "smollm2"):
        response = chat(api, alpha, model=model, messages=parts, max_completion_tokens=2, k=1, seed=5, n=1)
        assert response.status_code == 200, response.content[:500]
        assert response.json()["usage"]["completion_tokens"] <= 2
    connection.set_tenant(alpha.tenant)
    assert GenerationRun.objects.get(pk=response.json()["hartonomous"]["run"]).messages[0]["content"] == \
        "Which port does Zorblax listen on?"


@db
def test_a_cut_short_answer_finishes_with_length(smol, alpha, facts, api):  # noqa: F811
    body = chat(api, alpha, model="smollm2", messages=ASK, max_tokens=1, k=0).json()
    assert body["choices"][0]["finish_reason"] == "length" and body["hartonomous"]["finish_reason"] == "length"


@db
def test_exhausted_credits_end_the_answer_with_length_and_say_why(smol, alpha, facts, api):  # noqa: F811
    CreditBalance.objects.filter(tenant=alpha.tenant).update(balance=Decimal("0.0001"))
    body = chat(api, alpha, model="smollm2", messages=ASK, max_tokens=64, k=1).json()
    assert body["choices"][0]["finish_reason"] == "length" and body["hartonomous"]["finish_reason"] == "credits"
    assert body["usage"]["completion_tokens"] <= 16
    CreditBalance.objects.filter(tenant=alpha.tenant).update(balance=Decimal("0"))
    assert assert_error_shape(chat(api, alpha, model="smollm2", messages=ASK, stream=True), 402)["code"] == \
        "insufficient_credits"


@db
def test_it_streams_chunks_and_done(smol, alpha, facts, api):  # noqa: F811
    response = chat(api, alpha, model="smollm2", messages=ASK, max_tokens=16, k=2, stream=True,
                    stream_options={"include_usage": True})
    assert response.status_code == 200 and response["Content-Type"].startswith("text/event-stream")
    lines = [line for line in b"".join(response.streaming_content).decode().split("\n\n") if line]
    assert all(line.startswith("data: ") for line in lines) and lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[6:]) for line in lines[:-1]]
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == chunks[0]["id"] for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    tokens = [c for c in chunks[1:] if c["choices"] and c["choices"][0]["finish_reason"] is None]
    assert 1 <= len(tokens) <= 16 and all("attributions" in c["hartonomous"] for c in tokens)
    finish, usage = chunks[-2], chunks[-1]
    assert finish["choices"][0]["finish_reason"] in ("stop", "length") and finish["choices"][0]["delta"] == {}
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == len(tokens)
    assert "7431" in "".join(c["choices"][0]["delta"]["content"] for c in tokens)


@db
def test_it_refuses_what_it_cannot_do_with_the_error_shape(smol, alpha, beta, api):  # noqa: F811
    connection.set_tenant(alpha.tenant)
    before = GenerationRun.objects.count()
    assert assert_error_shape(chat(api, alpha, model="no-such-model", messages=ASK), 404)["code"] == "model_not_found"
    assert_error_shape(chat(api, beta, model="smollm2", messages=ASK), 404)  # alpha's model is not beta's
    for bad in ({"n": 3}, {"messages": []}, {"messages": [{"role": "tool", "content": "x"}]}, {"temperature": -2},
                {"tools": [{"type": "function", "function": {"name": "f"}}]}, {"max_tokens": 0}):
        assert_error_shape(chat(api, alpha, **{"model": "smollm2", "messages": ASK, "stream": True, **bad}), 400)
    assert_error_shape(api(alpha.keys["read"]).post("/v1/chat/completions", {"model": "smollm2", "messages": ASK}), 403)
    connection.set_tenant(alpha.tenant)
    assert GenerationRun.objects.count() == before


# --------------------------------------------------------------------------------------------------
# the real openai client against the real server
# --------------------------------------------------------------------------------------------------
def client(asgi_server, key) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{asgi_server}/v1", api_key=key, max_retries=0, timeout=120)


def _extra(live_facts) -> dict:  # noqa: F811
    return {"k": 2, "metadata_filter": live_facts["filter"]}


LIVE_ASK = [{"role": "user", "content": "On which frequency does the Vellichor relay station transmit?"}]


@pytest.mark.live
def test_the_openai_client_gets_a_completion(asgi_server, smol, alpha, live_facts, committed):  # noqa: F811
    oa = client(asgi_server, alpha.keys["generate"])
    completion = oa.chat.completions.create(model="smollm2", messages=LIVE_ASK, max_tokens=20, temperature=0,
                                            seed=3, extra_body=_extra(live_facts))
    assert completion.object == "chat.completion" and completion.model == "smollm2"
    choice = completion.choices[0]
    assert choice.message.role == "assistant" and "9182" in choice.message.content
    assert choice.finish_reason in ("stop", "length")
    assert completion.usage.completion_tokens <= 20 and completion.usage.prompt_tokens > 0
    ext = completion.model_extra["hartonomous"]
    assert ext["sources"][0]["atom"] == live_facts["ids"][0]
    connection.set_tenant(alpha.tenant)
    run = GenerationRun.objects.get(pk=ext["run"])
    assert run.status == "completed" and run.text == choice.message.content and run.seed == 3
    models = client(asgi_server, alpha.keys["read"]).models.list()
    assert str(smol.pk) in [m.id for m in models.data]


@pytest.mark.live
def test_the_openai_client_streams(asgi_server, smol, alpha, live_facts, committed):  # noqa: F811
    oa = client(asgi_server, alpha.keys["generate"])
    stream = oa.chat.completions.create(model=str(smol.pk), messages=LIVE_ASK, max_tokens=20, stream=True,
                                        stream_options={"include_usage": True}, extra_body=_extra(live_facts))
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert "9182" in text and len(finish) == 1 and finish[0] in ("stop", "length")
    assert chunks[-1].usage.completion_tokens == len([c for c in chunks[1:] if c.choices]) - 1
    run_id = chunks[0].model_extra["hartonomous"]["run"]
    connection.set_tenant(alpha.tenant)
    assert GenerationRun.objects.get(pk=run_id).text == text


@pytest.mark.live
def test_the_openai_client_sees_our_errors(asgi_server, smol, alpha, live_facts, committed):  # noqa: F811
    oa = client(asgi_server, alpha.keys["generate"])
    with pytest.raises(openai.NotFoundError) as missing:
        oa.chat.completions.create(model="no-such-model", messages=LIVE_ASK)
    assert missing.value.body["code"] == "model_not_found" and missing.value.body["correlation_id"]
    with pytest.raises(openai.BadRequestError) as bad:
        oa.chat.completions.create(model="smollm2", messages=LIVE_ASK, n=2)
    assert bad.value.body["code"] == "validation_error" and "n" in bad.value.body["details"]["fields"]
    with pytest.raises(openai.BadRequestError):
        oa.chat.completions.create(model="smollm2", messages=LIVE_ASK, stream=True, temperature=-1)
    with pytest.raises(openai.AuthenticationError):
        client(asgi_server, "hk_deadbeef_not-a-real-key").chat.completions.create(model="smollm2", messages=LIVE_ASK)
    with pytest.raises(openai.PermissionDeniedError):
        client(asgi_server, alpha.keys["read"]).chat.completions.create(model="smollm2", messages=LIVE_ASK)
