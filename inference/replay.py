"""Replay a recorded generation: the same model (checked by digest), the same sources as they were then
(checked by SHA-256; soft-deleted atoms still count), the same prompt, parameters and seed. The replay is
itself a recorded run (`replay_of` the original) and the report says where, if anywhere, it diverged."""
from __future__ import annotations

from dataclasses import dataclass

from atoms.models import Atom
from hartonomous.errors import Conflict, Unprocessable

from .generation import GenerationSpec, generation_start
from .knn import KNN_LEGACY
from .models import Model

__all__ = ["ReplayReport", "generation_replay"]


@dataclass
class ReplayReport:
    original: object
    replay: object
    identical: bool
    context_identical: bool
    compared: int
    first_difference: dict | None

    def as_dict(self) -> dict:
        return {"run": self.original.pk, "replay": self.replay.pk, "identical": self.identical,
                "context_identical": self.context_identical, "tokens_compared": self.compared,
                "first_difference": self.first_difference}


def _check_sources(run) -> list[int]:
    sources = list(run.sources.order_by("rank"))
    found = {a.pk: a for a in Atom.objects.filter(pk__in=[s.atom_id for s in sources]).only("id", "sha256")}
    changed = [s.atom_id for s in sources if s.atom_id not in found or found[s.atom_id].sha256 != s.sha256]
    if changed:
        raise Unprocessable("Source atoms of this run are gone or changed; it cannot be replayed exactly.",
                            details={"atoms": changed})
    return [s.atom_id for s in sources]


def _model(run) -> Model:
    model = Model.objects.filter(pk=run.model_id).select_related("root").first()
    if model is None or model.root.sha256 != run.model_digest:
        raise Unprocessable("The run's model is gone or its weights changed; it cannot be replayed exactly.",
                            details={"model": run.model_id, "digest": run.model_digest})
    return model


def generation_replay(*, tenant, run, principal: str = "") -> ReplayReport:
    if run.status == "running":
        raise Conflict("The run is still running.", details={"run": run.pk})
    p = run.params
    sampling = dict(p["sampling"], seed=run.seed)
    original = list(run.steps.order_by("position").values_list("token_id", flat=True))
    if run.status != "completed":   # a cut-short run: replay as far as it went
        sampling["max_tokens"] = max(1, len(original))
    spec = GenerationSpec(
        model=_model(run), prompt=run.prompt if run.messages is None else None, messages=run.messages,
        k=len(p.get("source_ids") or []) or p["k"], context_budget=p["context_budget"], sampling=sampling,
        knn_lambda=p.get("knn_lambda", 0.0), alternatives=p.get("alternatives", 5),
        attribution_layers=len(p["attribution_layers"]), source_ids=_check_sources(run),
        knn_datastore=p.get("knn_datastore"), knn_settings=p.get("knn_settings", KNN_LEGACY))
    stream = generation_start(tenant=tenant, spec=spec, principal=principal, replay_of=run)
    for _ in stream:
        pass
    replay = stream.run
    replay.refresh_from_db()
    tokens = stream.tokens
    n = min(len(tokens), len(original))
    diff = next((i for i in range(n) if tokens[i] != original[i]), None)
    if diff is None and len(tokens) != len(original):
        diff = n
    first = None if diff is None else {
        "position": diff, "original": original[diff] if diff < len(original) else None,
        "replay": tokens[diff] if diff < len(tokens) else None}
    return ReplayReport(run, replay, first is None, replay.context_digest == run.context_digest, n, first)
