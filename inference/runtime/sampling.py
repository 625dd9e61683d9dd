"""Choosing the next token from logits: greedy, temperature, top-k, top-p, repetition penalty, seed.

The order follows llama.cpp's default chain: repetition penalty -> top-k -> top-p -> temperature -> draw.
temperature == 0 is greedy (argmax after the penalty). Draws use a numpy Generator seeded per Sampler,
so a seed reproduces a generation exactly.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["SamplingParams", "Sampler", "find_stop"]


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.0
    top_k: int = 0                 # 0: off
    top_p: float = 1.0             # 1.0: off
    repetition_penalty: float = 1.0
    repeat_last_n: int = 64        # how many recent tokens the penalty looks at
    seed: int | None = None
    max_tokens: int = 256
    stop: tuple[str, ...] = ()

    def __post_init__(self):
        def number(name, lo, hi, *, integer=False, lo_open=False):
            v = getattr(self, name)
            ok_type = isinstance(v, int) if integer else isinstance(v, (int, float))
            if isinstance(v, bool) or not ok_type or v != v or v < lo or v > hi or (lo_open and v == lo):
                raise ValueError(f"{name} must be {'an integer' if integer else 'a number'} in "
                                 f"{'(' if lo_open else '['}{lo}, {hi}], got {v!r}")

        number("temperature", 0.0, 100.0)
        number("top_k", 0, 1 << 31, integer=True)
        number("top_p", 0.0, 1.0, lo_open=True)
        number("repetition_penalty", 0.0, 100.0, lo_open=True)
        number("repeat_last_n", 0, 1 << 31, integer=True)
        number("max_tokens", 1, 1 << 31, integer=True)
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0):
            raise ValueError(f"seed must be a non-negative integer or None, got {self.seed!r}")
        stop = self.stop
        if isinstance(stop, str):
            stop = (stop,)
        if not all(isinstance(s, str) and s for s in stop) or len(stop) > 16:
            raise ValueError("stop must be up to 16 non-empty strings")
        object.__setattr__(self, "stop", tuple(stop))

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


class Sampler:
    """`sampler(logits, history) -> token id`; history is the token ids so far (prompt + generated)."""

    def __init__(self, params: SamplingParams):
        self.params = params
        self.rng = np.random.default_rng(params.seed)

    def __call__(self, logits: np.ndarray, history: Sequence[int] = ()) -> int:
        p = self.params
        logits = np.asarray(logits, dtype=np.float32)
        if logits.ndim != 1 or logits.size == 0:
            raise ValueError(f"logits must be a non-empty vector, got shape {logits.shape}")
        if np.isnan(logits).any():
            raise ValueError("logits contain NaN")
        logits = self._penalise(logits, history)
        if p.greedy:
            return int(np.argmax(logits))
        ids = np.arange(logits.size)
        if p.top_k and p.top_k < logits.size:
            keep = np.argpartition(-logits, p.top_k - 1)[:p.top_k]
            ids, logits = keep, logits[keep]
        order = np.argsort(-logits, kind="stable")
        ids, logits = ids[order], logits[order]
        if p.top_p < 1.0:
            probs = _softmax(logits)
            cut = int(np.searchsorted(np.cumsum(probs), p.top_p)) + 1  # smallest prefix with mass >= top_p
            ids, logits = ids[:cut], logits[:cut]
        probs = _softmax(logits / np.float32(p.temperature))
        return int(ids[self.rng.choice(probs.size, p=probs)])

    def _penalise(self, logits: np.ndarray, history: Sequence[int]) -> np.ndarray:
        p = self.params
        if p.repetition_penalty == 1.0 or p.repeat_last_n == 0 or len(history) == 0:
            return logits
        recent = np.unique(np.asarray(history[-p.repeat_last_n:], dtype=np.int64))
        recent = recent[(recent >= 0) & (recent < logits.size)]
        out = logits.copy()
        vals = out[recent]
        out[recent] = np.where(vals > 0, vals / p.repetition_penalty, vals * p.repetition_penalty)
        return out


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp((x - x.max()).astype(np.float64))
    return e / e.sum()


def find_stop(text: str, stops: Sequence[str]) -> tuple[int, int]:
    """(index of the earliest stop string in text or -1, length of the longest suffix of text that is a
    proper prefix of some stop string: text that must be held back while streaming)."""
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    if hits:
        return min(hits), 0
    hold = 0
    for s in stops:
        for n in range(min(len(s) - 1, len(text)), 0, -1):
            if text.endswith(s[:n]):
                hold = max(hold, n)
                break
    return -1, hold
