"""The GPU forward pass (inference/runtime/llama_gpu.py) against the C path on the real SmolLM2 file.

Its code is written against an array namespace: here it runs on NumPy (every machine), and on CuPy where
a device is found. Float matrix products instead of integer block sums make logits agree to a cosine, not
bit for bit: on this model our own NumPy reference path and the C path agree to 0.9989 (its massive
activations amplify float summation order), the GPU path to 0.998."""
from __future__ import annotations

import numpy as np
import pytest

import native
from inference.runtime import Llama

PROMPT = "The three primary colours are red, yellow and"
NAMESPACES = ["numpy", pytest.param("cupy", marks=pytest.mark.skipif(not native.cupy_available(), reason="no GPU"))]


def _cos(a, b) -> float:
    return float(np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b))


@pytest.fixture(scope="module", params=NAMESPACES)
def device_model(request, gguf):
    xp = np if request.param == "numpy" else __import__("cupy")
    return Llama.from_gguf(gguf, n_ctx=128, backend="gpu", xp=xp)


def test_it_agrees_with_the_c_path(device_model, model, tok):
    assert device_model.backend == "gpu" and model.backend == "c"
    ids = tok.encode(PROMPT)
    layers = [3, 20]
    got = device_model.forward(ids, cache := device_model.new_cache(), attention_layers=layers)
    want = model.forward(ids, model.new_cache(), attention_layers=layers)
    assert _cos(got.logits, want.logits) > 0.995 and int(got.logits.argmax()) == int(want.logits.argmax())
    assert _cos(got.hidden, want.hidden) > 0.995
    for i in layers:
        assert got.attention[i].shape == (model.config.n_head, len(ids))
        np.testing.assert_allclose(got.attention[i].sum(-1), 1.0, rtol=1e-5)
        assert np.abs(got.attention[i] - want.attention[i]).max() < 0.05
    nxt = device_model.forward([int(got.logits.argmax())], cache)  # one decode step on the filled cache
    ref = model.forward(ids + [int(want.logits.argmax())], model.new_cache())
    assert cache.n == len(ids) + 1 and _cos(nxt.logits, ref.logits) > 0.995


def test_greedy_tokens_and_all_positions_match(device_model, model, tok):
    ids = tok.encode(PROMPT)
    out, want, cache, ref_cache = [], [], device_model.new_cache(), model.new_cache()
    a, b = device_model.forward(ids, cache), model.forward(ids, ref_cache)
    for _ in range(12):
        out.append(int(a.logits.argmax()))
        want.append(int(b.logits.argmax()))
        a, b = device_model.forward([out[-1]], cache), model.forward([want[-1]], ref_cache)
    assert out == want
    full = device_model.forward(ids, device_model.new_cache(), all_positions=True)
    ref = model.forward(ids, model.new_cache(), all_positions=True)
    assert full.logits.shape == ref.logits.shape == (len(ids), model.config.vocab)
    assert min(_cos(x, y) for x, y in zip(full.logits, ref.logits, strict=True)) > 0.995


@pytest.mark.skipif(native.cupy_available(), reason="a GPU is present")
def test_asking_for_the_gpu_without_one_is_a_clear_error(gguf):
    with pytest.raises(ValueError, match="CUDA device"):
        Llama.from_gguf(gguf, n_ctx=16, backend="gpu")
