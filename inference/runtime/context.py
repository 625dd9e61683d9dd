"""In-context retrieval augmentation: lay retrieved sources and the user's prompt out as one token
sequence with the exact token span of every source, and turn attention into per-source mass.

The sequence is built from separately tokenized segments (template text, each source, the prompt), so a
source's span is exact by construction: attention that falls on positions [start, end) fell on that source.

Layouts:
- raw: ``<source 1>\\n\\n<source 2>\\n\\n...<prompt>`` (perplexity evaluation, plain completion);
- chat: the model's own chat template with the sources in a system message
  (``Use the following context ...``), the user's messages after it.

Attribution rule (documented in docs/generation.md): for a generated token, with A_l the attention
probabilities of its position over the context in layer l (H heads, rows summing to 1),

    mass(source) = 1/|L| * sum_{l in L} 1/H * sum_h sum_{p in span(source)} A_l[h, p]

with L the `ATTRIBUTION_LAYERS` layers that end at 4/5 of the depth (SmolLM2's 30 layers: 15..23). It
is the share of the token's attention that reads the source, in [0, 1]; the masses of all sources plus
the lead, the prompt and the generated text sum to 1. Measured on SmolLM2: the copying happens in the
upper-middle layers (17-22 put 25-45% of a copied token's attention on its source), while the last six
layers give every source under 6% — averaging over "the last layers" credited the wrong source.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

import native

__all__ = ["ATTRIBUTION_LAYERS", "Context", "Source", "attribution_layers", "build_context", "span_mass"]

ATTRIBUTION_LAYERS = 9
SEPARATOR = "\n\n"
RAW_LEAD = "\n"
MIN_SOURCE_TOKENS = 16        # a source cut to fewer tokens than this is left out instead
CHAT_PREAMBLE = "Use the following context to answer.\n\n"
_SLOT = "\u0000CONTEXT\u0000"


@dataclass(frozen=True)
class Source:
    atom_id: int
    text: str
    score: float = 0.0
    sha256: str = ""
    history_id: int | None = None


@dataclass
class Context:
    tokens: list[int]
    sources: list[Source]                       # the sources that made it into the context, in order
    spans: list[tuple[int, int]]                # token span of each of `sources`
    truncated: list[bool] = field(default_factory=list)
    prompt_span: tuple[int, int] = (0, 0)

    def span_array(self) -> np.ndarray:
        return np.asarray(self.spans, dtype=np.int64).reshape(-1, 2)


def attribution_layers(n_layer: int, count: int = ATTRIBUTION_LAYERS) -> list[int]:
    """The `count` layers that end at 4/5 of the depth (all layers when there are fewer)."""
    end = max(1, (4 * n_layer) // 5)
    return list(range(max(0, end - count), end))


def _fit(tokenizer, sources: Sequence[Source], budget: int) -> tuple[list[Source], list[list[int]], list[bool]]:
    kept, pieces, cut = [], [], []
    left = budget
    sep = tokenizer.encode(SEPARATOR, add_bos=False, special=False)
    for src in sources:
        ids = tokenizer.encode(src.text, add_bos=False, special=False)
        room = left - len(sep)
        if room < MIN_SOURCE_TOKENS or not ids:
            if room < MIN_SOURCE_TOKENS:
                break
            continue
        truncated = len(ids) > room
        ids = ids[:room] + sep
        kept.append(src)
        pieces.append(ids)
        cut.append(truncated)
        left -= len(ids)
    return kept, pieces, cut


def build_context(tokenizer, sources: Sequence[Source], *, prompt: str | None = None,
                  messages: Sequence[Mapping[str, str]] | None = None, budget: int) -> Context:
    """Tokens for `sources` (best first, cut to `budget` tokens in all) and the prompt.

    Give `prompt` for the raw layout or `messages` (OpenAI-style) for the chat layout. User text is
    tokenized with control tokens kept plain, so a prompt cannot inject '<|im_start|>'.
    """
    if (prompt is None) == (messages is None):
        raise ValueError("give exactly one of prompt or messages")
    if budget < 0:
        raise ValueError("budget must be >= 0")
    kept, pieces, cut = _fit(tokenizer, sources, budget)
    if messages is None:
        head = tokenizer.encode(RAW_LEAD, add_bos=False, special=False) if kept else []
        tail = tokenizer.encode(prompt, special=False)
        tail_prefix: list[int] = []
    else:
        head, tail_prefix, tail = _chat_segments(tokenizer, messages, bool(kept))
    tokens, spans = list(head), []
    for ids in pieces:
        spans.append((len(tokens), len(tokens) + len(ids)))
        tokens += ids
    tokens += tail_prefix
    start = len(tokens)
    tokens += tail
    return Context(tokens, kept, spans, cut, (start, len(tokens)))


def _chat_segments(tokenizer, messages, with_context: bool) -> tuple[list[int], list[int], list[int]]:
    """(tokens before the sources, template tokens between sources and user text, the rest)."""
    msgs = [dict(m) for m in messages]
    if with_context:
        msgs = [{"role": "system", "content": CHAT_PREAMBLE + _SLOT}] + msgs
    text = tokenizer.render_chat(msgs, add_generation_prompt=True)
    if not with_context:
        return [], [], _encode_template(tokenizer, text, [m["content"] for m in messages])
    before, _, after = text.partition(_SLOT)
    return tokenizer.encode(before), [], _encode_template(tokenizer, after, [m["content"] for m in messages])


def _encode_template(tokenizer, text: str, user_texts: Sequence[str]) -> list[int]:
    """Template text with control tokens honoured, the users' contents with control tokens kept plain."""
    out, rest = [], text
    for content in user_texts:
        at = rest.find(content) if content else -1
        if at < 0:
            continue
        out += tokenizer.encode(rest[:at]) + tokenizer.encode(content, add_bos=False, special=False)
        rest = rest[at + len(content):]
    return out + tokenizer.encode(rest, add_bos=False)


def span_mass(attention: Mapping[int, np.ndarray], spans: np.ndarray | Sequence[tuple[int, int]]) -> np.ndarray:
    """Mass per span under the rule in the module docstring: (n_spans,) float32 in [0, 1].

    attention: layer -> (H, n_ctx) probabilities of one position (as Llama.forward returns them).
    """
    spans = np.asarray(spans, dtype=np.int64).reshape(-1, 2)
    if not attention or spans.size == 0:
        return np.zeros(len(spans), np.float32)
    probs = np.stack([np.asarray(a, dtype=np.float32) for a in attention.values()])  # (L, H, n)
    return native.span_mass(probs, spans)
