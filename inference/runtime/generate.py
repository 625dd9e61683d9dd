"""Token-by-token generation over Llama + GGUFTokenizer + Sampler, with streaming text and stop strings.

`generate(...)` yields one `Step` per generated token: the token id, the text it completes (UTF-8 held
back until a character is whole, and text that might begin a stop string held back until it cannot),
and, when asked for, the last position's attention probabilities for selected layers (attribution).
"""
from __future__ import annotations

import codecs
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from .llama import ForwardResult, KVCache, Llama
from .sampling import Sampler, SamplingParams, find_stop
from .tokenizer import GGUFTokenizer

__all__ = ["Step", "generate"]


@dataclass
class Step:
    token: int
    text: str                      # newly released text (may be empty)
    logits: np.ndarray             # (vocab,) float32 that chose this token
    attention: dict[int, np.ndarray] = field(default_factory=dict)  # layer -> (n_head, n_ctx)
    finish_reason: str | None = None  # 'stop' | 'eos' | 'length' on the last step


def generate(model: Llama, tokenizer: GGUFTokenizer, prompt_tokens: Sequence[int], params: SamplingParams,
             *, cache: KVCache | None = None, attention_layers: Iterable[int] = (),
             adjust: Callable[[ForwardResult], np.ndarray] | None = None) -> Iterator[Step]:
    """adjust: maps each forward result to the logits (or log-probabilities) to sample from, e.g. a
    kNN-LM interpolation; the Step carries what was sampled from."""
    if len(prompt_tokens) == 0:
        raise ValueError("the prompt is empty")
    cache = cache if cache is not None else model.new_cache()
    layers = tuple(attention_layers)
    sampler = Sampler(params)
    history = list(prompt_tokens)
    result = model.forward(prompt_tokens, cache, attention_layers=layers)
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    pending = ""
    for i in range(params.max_tokens):
        logits = adjust(result) if adjust is not None else result.logits
        token = sampler(logits, history)
        history.append(token)
        attention = result.attention
        if token == tokenizer.eos_id or token in tokenizer.special_ids and token != tokenizer.bos_id:
            yield Step(token, decoder.decode(b"", final=True) + pending, logits, attention, "eos")
            return
        pending += decoder.decode(tokenizer.token_bytes([token]))
        at, hold = find_stop(pending, params.stop)
        if at >= 0:
            yield Step(token, pending[:at], logits, attention, "stop")
            return
        last = i == params.max_tokens - 1 or cache.n >= cache.capacity
        if last:
            yield Step(token, pending + decoder.decode(b"", final=True), logits, attention, "length")
            return
        release = len(pending) - hold
        yield Step(token, pending[:release], logits, attention)
        pending = pending[release:]
        result = model.forward([token], cache, attention_layers=layers)
