"""Generation with attention over the tenant's atoms, recorded token by token (the AtomicStream).

`generation_start` validates, checks credits, retrieves the tenant's atoms with hybrid search, lays the
best into the context within a token budget (inference.runtime.context), opens a GenerationRun with the
retrieval snapshot, and returns a `GenerationStream`: iterating it decodes and yields events

    {"type": "run", ...}      once, before the first token: run id, model, sources with their spans
    {"type": "token", ...}    per token: position, token id, text released, log-probability, top
                              alternatives, attributions [{atom, mass}] (rule: runtime/context.py)
    {"type": "done", ...}     once: finish reason, text, usage, per-source mass, timings

Steps are written in batches (FIRST_FLUSH, then FLUSH_EVERY) with their usage (metered per token, attributed to the
source atoms); credits are checked at every batch and an exhausted balance ends the stream with
finish_reason "credits". Closing the stream early (a client that went away) keeps the steps so far
and closes the run as cancelled / "disconnected"; an error closes it as failed.
"""
from __future__ import annotations

import inspect
import logging
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import numpy as np

from atoms.embedding import TEXT_MODALITIES
from atoms.models import Atom
from hartonomous.errors import NotFound, Unprocessable, ValidationFailed

from .models import Model
from .runtime.context import (
    ATTRIBUTION_LAYERS,
    Context,
    Source,
    attribution_layers,
    build_context,
    span_mass,
)

__all__ = ["GenerationSpec", "GenerationStream", "generation_start", "MAX_PROMPT_CHARS"]

log = logging.getLogger(__name__)

MAX_PROMPT_CHARS = 32_000
MAX_MESSAGES = 64
GENERATION_CONTEXT = 2048
FLUSH_EVERY = 32
FIRST_FLUSH = 8               # the first batch is small: a run without credits stops early
MIN_MASS = 0.001              # attributions below this share of a token's attention are not recorded
TOP_ATTRIBUTIONS = 5


@dataclass
class GenerationSpec:
    model: Model
    prompt: str | None = None
    messages: list[dict] | None = None
    k: int = 4
    context_budget: int = 1024
    sampling: dict = field(default_factory=dict)
    knn_lambda: float = 0.0
    alternatives: int = 5
    attribution_layers: int = ATTRIBUTION_LAYERS
    source_ids: list[int] | None = None    # use these atoms, in this order, instead of searching
    knn_datastore: int | None = None        # the datastore atom to use (default: the model's latest)
    knn_settings: dict | None = None        # k / temperature / adaptive (inference.knn.knn_settings); None: defaults
    metadata_filter: dict | None = None     # restrict retrieval to atoms whose metadata contains this


# --------------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------------
def _check_text(spec: GenerationSpec) -> None:
    if (spec.prompt is None) == (spec.messages is None):
        raise ValidationFailed("Give a prompt or messages.", details={"fields": ["prompt", "messages"]})
    if spec.prompt is not None:
        if not isinstance(spec.prompt, str) or not spec.prompt.strip():
            raise ValidationFailed("The prompt is empty.", details={"field": "prompt"})
        if len(spec.prompt) > MAX_PROMPT_CHARS:
            raise ValidationFailed(f"The prompt is longer than {MAX_PROMPT_CHARS} characters.",
                                   details={"field": "prompt", "length": len(spec.prompt)})
        return
    msgs = spec.messages
    ok = isinstance(msgs, list) and 0 < len(msgs) <= MAX_MESSAGES and all(
        isinstance(m, dict) and m.get("role") in ("system", "user", "assistant") and isinstance(m.get("content"), str)
        for m in msgs)
    if not ok:
        raise ValidationFailed(f"messages must be 1-{MAX_MESSAGES} {{role: system|user|assistant, content: str}}.",
                               details={"field": "messages"})
    if not any(m["content"].strip() for m in msgs):
        raise ValidationFailed("The messages are empty.", details={"field": "messages"})
    if sum(len(m["content"]) for m in msgs) > MAX_PROMPT_CHARS:
        raise ValidationFailed(f"The messages are longer than {MAX_PROMPT_CHARS} characters.",
                               details={"field": "messages"})


def _check_numbers(spec: GenerationSpec) -> None:
    checks = {"k": (spec.k, 0, 32), "context_budget": (spec.context_budget, 0, GENERATION_CONTEXT),
              "alternatives": (spec.alternatives, 0, 20), "attribution_layers": (spec.attribution_layers, 1, 64)}
    for name, (v, lo, hi) in checks.items():
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise ValidationFailed(f"{name} must be an integer in [{lo}, {hi}].", details={"field": name, "value": v})
    lam = spec.knn_lambda
    if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not 0.0 <= lam < 1.0:
        raise ValidationFailed("knn_lambda must be a number in [0, 1).", details={"field": "knn_lambda"})


def sampling_params(sampling: dict):
    from .runtime import SamplingParams

    if not isinstance(sampling, dict):
        raise ValidationFailed("sampling must be an object.")
    try:
        return SamplingParams(**sampling)
    except (ValueError, TypeError) as exc:
        raise ValidationFailed(f"Invalid sampling parameters: {exc}", details={"field": "sampling"}) from None


def spec_validate(spec: GenerationSpec):
    """Every check that needs no model loaded; returns the SamplingParams (seed fixed for the record)."""
    _check_text(spec)
    _check_numbers(spec)
    if spec.model.architecture != "llama":
        raise ValidationFailed(f"Model {spec.model.name!r} ({spec.model.architecture}) cannot generate text.",
                               details={"model": spec.model.pk, "architecture": spec.model.architecture})
    params = sampling_params(spec.sampling)
    if params.seed is None:
        params = replace(params, seed=random.SystemRandom().randrange(2**31))
    return params


# --------------------------------------------------------------------------------------------------
# retrieval
# --------------------------------------------------------------------------------------------------
def _query_text(spec: GenerationSpec) -> str:
    if spec.prompt is not None:
        return spec.prompt
    users = [m["content"] for m in spec.messages if m["role"] == "user" and m["content"].strip()]
    return users[-1] if users else spec.messages[-1]["content"]


def _history_ids(ids: list[int]) -> dict[int, int]:
    from django.db.models import Max

    rows = Atom.history.filter(id__in=ids).values("id").annotate(h=Max("history_id"))
    return {r["id"]: r["h"] for r in rows}


def _atom_text(atom: Atom) -> str:
    if atom.text:
        return atom.text
    if atom.content is not None and not atom.in_blob:
        return bytes(atom.content).decode("utf-8", errors="replace")
    return ""


def retrieve(spec: GenerationSpec) -> list[Source]:
    """The atoms to put in the context, best first (hybrid search, or `source_ids` as given)."""
    from atoms.search import SearchQuery, atom_search
    from atoms.selectors import AtomFilters

    if spec.source_ids is not None:
        found = Atom.objects.in_bulk(spec.source_ids)
        missing = [i for i in spec.source_ids if i not in found]
        if missing:
            raise NotFound("No such atoms.", details={"atoms": missing[:20]})
        scored = [(found[i], 0.0) for i in spec.source_ids]
    elif spec.k == 0:
        return []
    else:
        filters = AtomFilters(modality=list(TEXT_MODALITIES), metadata=spec.metadata_filter)
        scored = [(h.atom, h.score) for h in atom_search(SearchQuery(text=_query_text(spec), k=spec.k, filters=filters))]
    hist = _history_ids([a.pk for a, _ in scored])
    return [Source(a.pk, _atom_text(a), float(s), a.sha256, hist.get(a.pk)) for a, s in scored if _atom_text(a).strip()]


def layout(loaded, spec: GenerationSpec, sources: list[Source], max_tokens: int) -> Context:
    """Sources within the budget (and within the window left by the prompt and max_tokens) + the prompt."""
    n_ctx = loaded.llama.n_ctx
    kwargs = {"prompt": spec.prompt} if spec.prompt is not None else {"messages": spec.messages}
    try:
        bare = build_context(loaded.tokenizer, [], budget=0, **kwargs)
        room = n_ctx - len(bare.tokens) - max_tokens - 64   # 64: template tokens around the sources
        if room < 0:
            raise Unprocessable(
                f"The prompt ({len(bare.tokens)} tokens) plus {max_tokens} to generate exceeds the context window "
                f"of {n_ctx} tokens.", details={"prompt_tokens": len(bare.tokens), "context": n_ctx},
                code="context_overflow")
        return build_context(loaded.tokenizer, sources, budget=min(spec.context_budget, room), **kwargs)
    except ValueError as exc:
        raise ValidationFailed(f"The prompt cannot be laid out: {exc}") from None


# --------------------------------------------------------------------------------------------------
# start
# --------------------------------------------------------------------------------------------------
def _snapshots(ctx: Context):
    from provenance.atomicstream import SourceSnapshot

    return [SourceSnapshot(s.atom_id, s.sha256, s.history_id, rank, s.score, tuple(span), cut)
            for rank, (s, span, cut) in enumerate(zip(ctx.sources, ctx.spans, ctx.truncated, strict=True))]


def _recorded_params(spec: GenerationSpec, params, layers: list[int]) -> dict:
    sampling = {"temperature": params.temperature, "top_k": params.top_k, "top_p": params.top_p,
                "repetition_penalty": params.repetition_penalty, "repeat_last_n": params.repeat_last_n,
                "seed": params.seed, "max_tokens": params.max_tokens, "stop": list(params.stop)}
    return {"sampling": sampling, "k": spec.k, "context_budget": spec.context_budget, "knn_lambda": spec.knn_lambda,
            "attribution_layers": layers, "alternatives": spec.alternatives, "metadata_filter": spec.metadata_filter,
            "source_ids": spec.source_ids, "n_ctx": GENERATION_CONTEXT}


def generation_start(*, tenant, spec: GenerationSpec, principal: str = "", replay_of=None) -> GenerationStream:
    from billing.services import record_usage, require_credits
    from hartonomous import correlation
    from provenance.atomicstream import generation_run_open

    from .atom_source import load_runtime

    params = spec_validate(spec)
    require_credits(tenant=tenant)
    loaded = load_runtime(spec.model, n_ctx=GENERATION_CONTEXT)
    ctx = layout(loaded, spec, retrieve(spec), params.max_tokens)
    layers = attribution_layers(loaded.llama.config.n_layer, spec.attribution_layers)
    adjust, datastore = _knn_adjust(tenant, spec) if spec.knn_lambda > 0 else (None, None)
    recorded = _recorded_params(spec, params, layers)
    recorded["knn_datastore"] = datastore.pk if datastore else None
    if datastore:
        from .knn import knn_settings

        recorded["knn_settings"] = knn_settings(spec.knn_settings)
    run = generation_run_open(
        tenant=tenant, model_id=spec.model.pk, model_name=spec.model.name, model_digest=spec.model.root.sha256,
        params=recorded, seed=params.seed, context_tokens=ctx.tokens,
        sources=_snapshots(ctx), prompt=spec.prompt or "", messages=spec.messages, principal=principal,
        correlation_id=correlation.get() or "", replay_of=replay_of)
    record_usage(tenant=tenant, meter="generate.tokens", quantity=len(ctx.tokens),
                 idempotency_key=f"generate:{tenant.schema_name}:{run.pk}:context",
                 attributes={"run": run.pk, "context_tokens": len(ctx.tokens)})
    return GenerationStream(tenant, run, loaded, ctx, params, layers, adjust, spec.alternatives, principal)


def _knn_adjust(tenant, spec: GenerationSpec):
    from .knn import knn_adjuster

    return knn_adjuster(tenant=tenant, model=spec.model, lam=float(spec.knn_lambda), datastore=spec.knn_datastore,
                        settings=spec.knn_settings)


# --------------------------------------------------------------------------------------------------
# the stream
# --------------------------------------------------------------------------------------------------
def _logsumexp(x: np.ndarray) -> float:
    m = float(np.max(x))
    return m + float(np.log(np.sum(np.exp(x - np.float32(m)), dtype=np.float64)))


def top_tokens(x: np.ndarray, n: int) -> np.ndarray:
    """Indices of the n largest values, best first: a threshold pass keeps the few candidates near the
    maximum (a full partition of a 49K vocabulary costs more than the rest of a step's bookkeeping)."""
    m = float(np.max(x))
    for width in (1.0, 3.0, 8.0):
        cand = np.flatnonzero(x >= m - width)
        if cand.size >= n:
            break
    else:
        cand = np.argpartition(-x, n - 1)[:n]
    if cand.size > 4 * n:
        vals = x[cand]
        keep = np.argpartition(-vals, n - 1)[:n]
        cand = cand[keep]
    return cand[np.argsort(-x[cand], kind="stable")[:n]]


class GenerationStream:
    """Iterate for events (see the module docstring); `close()` ends it early (client gone)."""

    def __init__(self, tenant, run, loaded, ctx: Context, params, layers, adjust, alternatives: int, principal: str):
        self.tenant, self.run, self.loaded, self.ctx, self.params = tenant, run, loaded, ctx, params
        self.layers, self.adjust, self.alternatives, self.agent = layers, adjust, alternatives, principal
        self.spans = ctx.span_array()
        self.atom_ids = [s.atom_id for s in ctx.sources]
        self.masses = np.zeros(len(self.atom_ids), np.float64)
        self.top_steps = np.zeros(len(self.atom_ids), np.int64)
        self.buffer, self.pieces, self.tokens = [], [], []
        self.finish_reason, self.status = "length", "completed"
        self.ttft_ms = None
        self.piece_cache: dict[int, str] = {}
        self.flushed = False
        self._events = self._run()

    def __iter__(self) -> Iterator[dict]:
        return self._events

    def __next__(self) -> dict:
        return next(self._events)

    def close(self) -> None:
        """Stop the stream: the run is closed as cancelled / "disconnected" with the steps so far. A stream
        never read is first run to its run event (no token is decoded), so its run is closed too."""
        if inspect.getgeneratorstate(self._events) == inspect.GEN_CREATED:
            next(self._events, None)
        self._events.close()

    # ---- events ----
    def _start_event(self) -> dict:
        return {"type": "run", "run": self.run.pk, "model": self.run.model_id, "model_digest": self.run.model_digest,
                "seed": self.run.seed, "context_tokens": len(self.ctx.tokens),
                "sources": [{"atom": s.atom_id, "rank": i, "score": s.score, "span": list(span), "sha256": s.sha256}
                            for i, (s, span) in enumerate(zip(self.ctx.sources, self.ctx.spans, strict=True))]}

    def _run(self) -> Iterator[dict]:
        from .runtime import generate

        started = time.perf_counter()
        steps = None
        try:
            yield self._start_event()
            steps = generate(self.loaded.llama, self.loaded.tokenizer, self.ctx.tokens, self.params,
                             attention_layers=self.layers, adjust=self.adjust)
            for i, step in enumerate(steps):
                if self.ttft_ms is None:
                    self.ttft_ms = (time.perf_counter() - started) * 1000
                event = self._step(i, step)
                if step.finish_reason:
                    self.finish_reason = step.finish_reason
                if len(self.buffer) >= (FLUSH_EVERY if self.flushed else FIRST_FLUSH) and not self._flush():
                    self.finish_reason = "credits"
                    yield event
                    break
                yield event
        except GeneratorExit:
            self.status, self.finish_reason = "cancelled", "disconnected"
            raise
        except BaseException:
            self.status, self.finish_reason = "failed", "error"
            raise
        finally:
            if steps is not None:
                steps.close()
            self._finish(started)
        yield self._done_event()

    def _step(self, i: int, step) -> dict:
        from provenance.atomicstream import StepRecord

        x = np.asarray(step.logits, dtype=np.float32)  # what the token was sampled from
        lse = _logsumexp(x)
        alts = []
        if self.alternatives:
            alts = [{"token": int(t), "text": self._piece(int(t)), "logprob": round(float(x[t]) - lse, 5)}
                    for t in top_tokens(x, self.alternatives)]
        attributions = self._attribute(step.attention)
        piece = self._piece(step.token)
        record = StepRecord(i, int(step.token), piece, float(x[step.token]) - lse, alts, attributions)
        self.buffer.append(record)
        self.pieces.append(step.text)
        self.tokens.append(int(step.token))
        return {"type": "token", "position": i, "token": int(step.token), "text": step.text, "token_text": piece,
                "logprob": record.logprob, "alternatives": alts, "attributions": attributions}

    def _piece(self, token: int) -> str:
        piece = self.piece_cache.get(token)
        if piece is None:
            piece = self.piece_cache[token] = self.loaded.tokenizer.token_bytes([token]).decode("utf-8", errors="replace")
        return piece

    def _attribute(self, attention) -> list[dict]:
        if not self.atom_ids:
            return []
        mass = span_mass(attention, self.spans)
        self.masses += mass
        order = np.argsort(-mass)[:TOP_ATTRIBUTIONS]
        out = [{"atom": self.atom_ids[j], "mass": round(float(mass[j]), 6)} for j in order if mass[j] >= MIN_MASS]
        if out:
            self.top_steps[order[0]] += 1
        return out

    # ---- recording ----
    def _flush(self) -> bool:
        """Write buffered steps and their usage; False when the tenant's credits are exhausted."""
        from billing.selectors import credit_balance
        from billing.services import record_usage
        from provenance.atomicstream import generation_steps_append

        if not self.buffer:
            return True
        batch, self.buffer, self.flushed = self.buffer, [], True
        generation_steps_append(tenant=self.tenant, run=self.run, steps=batch)
        atoms: dict[str, float] = {}
        for rec in batch:
            for a in rec.attributions:
                atoms[str(a["atom"])] = round(atoms.get(str(a["atom"]), 0.0) + a["mass"], 6)
        record_usage(tenant=self.tenant, meter="generate.tokens", quantity=len(batch),
                     idempotency_key=f"generate:{self.tenant.schema_name}:{self.run.pk}:{batch[0].position}",
                     attributes={"run": self.run.pk, "positions": [batch[0].position, batch[-1].position],
                                 "atoms": atoms})
        return credit_balance(tenant=self.tenant) > 0

    def _finish(self, started: float) -> None:
        from provenance.atomicstream import generation_run_close

        if self.status == "completed":
            self._flush()
        else:
            try:
                self._flush()
            except Exception:  # noqa: BLE001 - keep the original error; the run is still closed below
                log.exception("generation %s: could not write the last steps", self.run.pk)
        self.duration_ms = (time.perf_counter() - started) * 1000
        generation_run_close(
            tenant=self.tenant, run=self.run, status=self.status, finish_reason=self.finish_reason,
            text="".join(self.pieces), masses=dict(zip(self.atom_ids, self.masses.tolist(), strict=True)),
            top_steps=dict(zip(self.atom_ids, self.top_steps.tolist(), strict=True)), ttft_ms=self.ttft_ms,
            duration_ms=self.duration_ms, agent=self.agent)

    def _done_event(self) -> dict:
        n = len(self.tokens)
        decode_s = max((self.duration_ms - (self.ttft_ms or 0)) / 1000, 1e-9)
        return {"type": "done", "run": self.run.pk, "finish_reason": self.finish_reason, "text": "".join(self.pieces),
                "tokens": self.tokens,
                "usage": {"prompt_tokens": len(self.ctx.tokens), "completion_tokens": n,
                          "total_tokens": len(self.ctx.tokens) + n},
                "sources": [{"atom": a, "mass_total": round(float(m), 6), "top_steps": int(t)}
                            for a, m, t in zip(self.atom_ids, self.masses, self.top_steps, strict=True)],
                "ttft_ms": round(self.ttft_ms or 0.0, 3), "duration_ms": round(self.duration_ms, 3),
                "tokens_per_s": round((n - 1) / decode_s, 2) if n > 1 else None}
