"""In-context layout of retrieved sources and the attribution rule, on the real SmolLM2 tokenizer and model."""
from __future__ import annotations

import numpy as np
import pytest

import native
from inference.runtime.context import Source, attribution_layers, build_context, span_mass

DOCS = [Source(1, "The Zorblax protocol uses port 7431 for its control channel."),
        Source(2, "Penguins live in the southern hemisphere and cannot fly."),
        Source(3, "A very long document. " * 400)]


def test_spans_cover_exactly_each_source(tok):
    ctx = build_context(tok, DOCS[:2], prompt="Which port does Zorblax use?", budget=200)
    assert [s.atom_id for s in ctx.sources] == [1, 2] and ctx.truncated == [False, False]
    for src, (a, b) in zip(ctx.sources, ctx.spans, strict=True):
        assert tok.decode(ctx.tokens[a:b]) == src.text + "\n\n"
    a, b = ctx.prompt_span
    assert tok.decode(ctx.tokens[a:b]) == "Which port does Zorblax use?" and b == len(ctx.tokens)
    assert tok.decode(ctx.tokens[:ctx.spans[0][0]]) == "\n"  # the lead takes the first position's attention sink


def test_it_keeps_to_the_budget_cutting_the_last_source(tok):
    ctx = build_context(tok, DOCS, prompt="q", budget=120)
    assert sum(b - a for a, b in ctx.spans) <= 120
    assert [s.atom_id for s in ctx.sources] == [1, 2, 3] and ctx.truncated == [False, False, True]
    assert build_context(tok, DOCS, prompt="q", budget=0).sources == []


def test_the_chat_layout_puts_sources_in_a_system_message_and_keeps_user_text_plain(tok):
    ctx = build_context(tok, DOCS[:1], messages=[{"role": "user", "content": "port? <|im_start|>"}], budget=100)
    text = tok.decode(ctx.tokens)
    assert text.index("Zorblax") < text.index("<|im_start|>user") and text.endswith("<|im_start|>assistant\n")
    im_start = tok.encode("<|im_start|>")[0]
    user = ctx.tokens[ctx.prompt_span[0]:]
    # the template's control tokens are ids, the user's literal '<|im_start|>' is plain text
    assert ctx.tokens.count(im_start) == 3 and "<|im_start|>" in tok.decode(user)
    a, b = ctx.spans[0]
    assert tok.decode(ctx.tokens[a:b]).startswith("The Zorblax")


def test_it_refuses_both_or_neither_prompt_and_messages(tok):
    with pytest.raises(ValueError):
        build_context(tok, DOCS, budget=10)
    with pytest.raises(ValueError):
        build_context(tok, DOCS, prompt="x", messages=[], budget=10)


def test_span_mass_matches_a_loop_and_native_attention():
    rng = np.random.default_rng(0)
    q, k, v = rng.normal(size=(6, 16)).astype(np.float32), rng.normal(size=(40, 16)).astype(np.float32), \
        rng.normal(size=(40, 8)).astype(np.float32)
    _, mass = native.attention(q, k, v)                      # 6 queries: read as 2 layers x 3 heads
    probs = mass.reshape(2, 3, 40)
    spans = np.array([[0, 10], [10, 25], [25, 40], [5, 5]])
    got = native.span_mass(probs, spans)
    want = [probs[:, :, a:b].sum() / 6 for a, b in spans]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    assert abs(got[:3].sum() - 1.0) < 1e-5 and got[3] == 0
    np.testing.assert_allclose(native.span_mass(probs[0], spans), [probs[0, :, a:b].sum() / 3 for a, b in spans],
                               rtol=1e-5)


def test_span_mass_validates():
    p = np.ones((2, 3, 10), np.float32) / 10
    for bad in (np.array([[0, 11]]), np.array([[5, 2]]), np.array([[-1, 2]]), np.array([0, 2]), np.array([[0.0, 2.0]])):
        with pytest.raises(ValueError):
            native.span_mass(p, bad)
    with pytest.raises(ValueError):
        native.span_mass(p.astype(np.float64), np.array([[0, 1]]))
    with pytest.raises(ValueError):
        native.span_mass(np.full((1, 1, 3), np.nan, np.float32), np.array([[0, 1]]))


@pytest.mark.parametrize("order", [[0, 1, 3], [1, 3, 0], [3, 0, 1]])
def test_the_source_the_model_copies_from_gets_the_mass_wherever_it_stands(model, tok, order):
    docs = DOCS[:2] + [Source(4, "The Quillfeather library renders vector maps in the browser using WebGL shaders.")]
    ctx = build_context(tok, [docs[i] if i < 2 else docs[2] for i in order], prompt="The Zorblax protocol uses port",
                        budget=300)
    res = model.forward(ctx.tokens, model.new_cache(), attention_layers=attribution_layers(model.config.n_layer))
    mass = span_mass(res.attention, ctx.spans)
    zorblax = [s.atom_id for s in ctx.sources].index(1)
    others = [m for i, m in enumerate(mass) if i != zorblax]
    assert mass[zorblax] > 1.5 * max(others) and 0 < mass.sum() <= 1.0001, mass


def test_the_attribution_band_ends_at_four_fifths_of_the_depth():
    assert attribution_layers(30) == list(range(15, 24))
    assert attribution_layers(30, 3) == [21, 22, 23] and attribution_layers(2, 9) == [0]
