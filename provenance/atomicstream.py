"""AtomicStream writes: open a generation run with its retrieval snapshot, append its steps in batches,
close it and record the `generate` activity in the provenance graph.

Graph: the run is a `run` node that `wasGeneratedBy` a `generate` activity which `used` every source
atom; the run `wasDerivedFrom` each source with weight = the source's share of all the attention mass
the run's tokens gave to sources (so a retraction's impact report carries it as the run's mass).
Steps are rows, not nodes: `generation_steps_for_atom` reads them through the attributions index.
"""
from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from .models import GenerationRun, GenerationSource, GenerationStep, RunStatus
from .services import activity_record, in_tenant

__all__ = ["SourceSnapshot", "StepRecord", "context_digest", "generation_run_close", "generation_run_open",
           "generation_runs_reap", "generation_steps_append"]


@dataclass(frozen=True)
class SourceSnapshot:
    atom_id: int
    sha256: str
    history_id: int | None
    rank: int
    score: float
    span: tuple[int, int]
    truncated: bool = False


@dataclass
class StepRecord:
    position: int
    token_id: int
    text: str
    logprob: float
    alternatives: list[dict] = field(default_factory=list)
    attributions: list[dict] = field(default_factory=list)  # [{"atom": id, "mass": m}] by mass


def context_digest(tokens: Sequence[int]) -> str:
    return hashlib.sha256(",".join(str(int(t)) for t in tokens).encode()).hexdigest()


def generation_run_open(*, tenant, model_id: int, model_name: str, model_digest: str, params: dict, seed: int,
                        context_tokens: Sequence[int], sources: Sequence[SourceSnapshot], prompt: str = "",
                        messages: list | None = None, principal: str = "", correlation_id: str = "",
                        replay_of: GenerationRun | None = None) -> GenerationRun:
    with in_tenant(tenant), transaction.atomic():
        run = GenerationRun.objects.create(
            model_id=model_id, model_name=model_name[:200], model_digest=model_digest, params=params, seed=seed,
            context_digest=context_digest(context_tokens), context_tokens=len(context_tokens), prompt=prompt,
            messages=messages, principal=principal[:200], correlation_id=correlation_id[:64], replay_of=replay_of)
        GenerationSource.objects.bulk_create([
            GenerationSource(run=run, atom_id=s.atom_id, sha256=s.sha256, history_id=s.history_id, rank=s.rank,
                             score=s.score, span_start=s.span[0], span_end=s.span[1], truncated=s.truncated)
            for s in sources])
        return run


def generation_steps_append(*, tenant, run: GenerationRun, steps: Sequence[StepRecord]) -> None:
    """One INSERT for a batch of steps (the run's token count is set when it closes)."""
    if not steps:
        return
    with in_tenant(tenant):
        GenerationStep.objects.bulk_create([
            GenerationStep(run=run, position=s.position, token_id=s.token_id, text=s.text[:200], logprob=s.logprob,
                           alternatives=s.alternatives, attributions=s.attributions,
                           top_atom_id=s.attributions[0]["atom"] if s.attributions else None,
                           top_mass=s.attributions[0]["mass"] if s.attributions else 0.0)
            for s in steps])


def generation_run_close(*, tenant, run: GenerationRun, status: str, finish_reason: str, text: str,
                         masses: dict[int, float], top_steps: dict[int, int], ttft_ms: float | None,
                         duration_ms: float, agent: str = "generate") -> GenerationRun:
    """Finish the run, store each source's mass, and record the generate activity in the graph."""
    if status not in RunStatus.values or status == RunStatus.RUNNING:
        raise ValueError(f"cannot close a run as {status!r}")
    with in_tenant(tenant), transaction.atomic():
        current = GenerationRun.objects.select_for_update().filter(pk=run.pk).values_list("status", flat=True).first()
        if current != RunStatus.RUNNING:  # closed already (the reaper and a late finisher): first one wins
            run.refresh_from_db()
            return run
        run.tokens_out = run.steps.count()
        run.status, run.finish_reason, run.text = status, finish_reason[:24], text
        run.finished_at, run.ttft_ms, run.duration_ms = timezone.now(), ttft_ms, duration_ms
        run.save(update_fields=["tokens_out", "status", "finish_reason", "text", "finished_at", "ttft_ms",
                                "duration_ms"])
        sources = list(run.sources.all())
        for src in sources:
            src.mass_total, src.top_steps = float(masses.get(src.atom_id, 0.0)), int(top_steps.get(src.atom_id, 0))
        GenerationSource.objects.bulk_update(sources, ["mass_total", "top_steps"])
        total = sum(s.mass_total for s in sources)
        run_node = ("run", str(run.pk), f"generation {run.pk}")
        atoms = [("atom", str(s.atom_id), s.sha256[:12]) for s in sources]
        derived = [(run_node, a, (s.mass_total / total) if total > 0 else 0.0) for s, a in zip(sources, atoms, strict=True)]
        activity_record(tenant=tenant, kind="generate", agent=agent or "generate", used=atoms, generated=[run_node],
                        derived=derived, ref=f"generate:{run.pk}",
                        attributes={"run": run.pk, "model": run.model_id, "model_digest": run.model_digest,
                                    "tokens": run.tokens_out, "finish_reason": run.finish_reason})
        return run


ABANDONED_AFTER = timedelta(minutes=30)


def _recorded_masses(run: GenerationRun) -> tuple[dict[int, float], dict[int, int], str]:
    masses, tops, pieces = {}, {}, []
    for step in run.steps.order_by("position").only("text", "attributions", "top_atom_id"):
        pieces.append(step.text)
        for a in step.attributions:
            masses[a["atom"]] = masses.get(a["atom"], 0.0) + a["mass"]
        if step.top_atom_id is not None:
            tops[step.top_atom_id] = tops.get(step.top_atom_id, 0) + 1
    return masses, tops, "".join(pieces)


def generation_runs_reap(*, tenant, older_than: timedelta = ABANDONED_AFTER) -> list[int]:
    """Close runs still `running` long after they began — a client gone before its stream started, a
    process killed mid-generation — as cancelled / "abandoned", with what their recorded steps hold."""
    with in_tenant(tenant):
        stale = list(GenerationRun.objects.filter(status=RunStatus.RUNNING, created_at__lt=timezone.now() - older_than))
        for run in stale:
            masses, tops, text = _recorded_masses(run)
            generation_run_close(tenant=tenant, run=run, status=RunStatus.CANCELLED, finish_reason="abandoned",
                                 text=text, masses=masses, top_steps=tops, ttft_ms=None,
                                 duration_ms=(timezone.now() - run.created_at).total_seconds() * 1000,
                                 agent=run.principal or "generate")
        return [run.pk for run in stale]
