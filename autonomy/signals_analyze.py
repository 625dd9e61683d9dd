"""Analyze: the signals a run gathers from the system. Each returns (value, details) where a higher
value is worse, or raises Unavailable when the part of the system it reads does not exist (yet)."""
from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import numpy as np
from django.db.models import Sum
from django.utils import timezone


class Unavailable(Exception):
    pass


def missing_embeddings(tenant) -> tuple[float, dict]:
    """Text atoms without an embedding of the text model (atoms_missing_embeddings' definition),
    counted in one statement with the text atoms."""
    from django.db.models import Count, Exists, OuterRef, Q

    from atoms.models import Atom, AtomEmbedding

    from .executors import text_model_name

    model = text_model_name()
    if model is None:
        raise Unavailable("no text embedding provider")
    embedded = AtomEmbedding.objects.filter(atom=OuterRef("pk"), model=model)
    counts = (Atom.objects.filter(deleted_at__isnull=True, text__isnull=False)
              .annotate(embedded=Exists(embedded))
              .aggregate(total=Count("id"), missing=Count("id", filter=Q(embedded=False))))
    missing, total = counts["missing"], counts["total"]
    return missing / max(total, 1), {"missing": missing, "text_atoms": total, "model": model}


def failed_ingests(tenant) -> tuple[float, dict]:
    from django.db.models import Count, Q

    from atoms.models import IngestJob

    since = timezone.now() - timedelta(days=7)
    counts = IngestJob.objects.filter(created_at__gte=since).aggregate(
        jobs=Count("id"), files=Sum("files_failed"),
        failed=Count("id", filter=Q(files_failed__gt=0) | Q(state="failed", files_failed=0)))
    jobs, failed = counts["jobs"], counts["failed"]
    return failed / max(jobs, 1), {"jobs": jobs, "jobs_with_failures": failed, "files_failed": counts["files"] or 0}


def embedding_drift(tenant, window: int = 200) -> tuple[float, dict]:
    """Cosine distance between the centroid of the newest `window` embeddings and the one before."""
    from atoms.models import AtomEmbedding

    from .executors import text_model_name

    model = text_model_name()
    if model is None:
        raise Unavailable("no text embedding provider")
    rows = list(AtomEmbedding.objects.filter(model=model).order_by("-id").values_list("vector", flat=True)[:2 * window])
    if len(rows) < 4:
        return 0.0, {"embeddings": len(rows), "model": model}
    half = len(rows) // 2
    new, old = np.asarray(rows[:half], np.float32).mean(0), np.asarray(rows[half:], np.float32).mean(0)
    cos = float(new @ old / (np.linalg.norm(new) * np.linalg.norm(old) + 1e-12))
    return max(0.0, 1.0 - cos), {"embeddings": len(rows), "model": model}


def rising_costs(tenant) -> tuple[float, dict]:
    from django.db.models import Q

    from billing.models import UsageEvent

    now = timezone.now()
    day, two_days = now - timedelta(days=1), now - timedelta(days=2)
    sums = UsageEvent.objects.filter(tenant=tenant, created_at__gte=two_days).aggregate(
        recent=Sum("credits", filter=Q(created_at__gte=day)), prior=Sum("credits", filter=Q(created_at__lt=day)))
    recent, prior = sums["recent"] or Decimal(0), sums["prior"] or Decimal(0)
    growth = float((recent - prior) / prior) if prior else (1.0 if recent > 0 else 0.0)
    return max(0.0, min(growth, 10.0)), {"credits_24h": str(recent), "credits_prev_24h": str(prior)}


def dead_letter_growth(tenant) -> tuple[float, dict]:
    from django.db.models import Count, Q

    from .models import DeadLetter

    counts = DeadLetter.objects.filter(state=DeadLetter.State.DEAD).aggregate(
        dead=Count("id"), recent=Count("id", filter=Q(created_at__gte=timezone.now() - timedelta(days=1))))
    return float(counts["recent"]), {"dead": counts["dead"], "last_24h": counts["recent"]}


def _generation_tokens(limit: int = 50) -> list[np.ndarray]:
    """The generated token ids of the tenant's latest finished generation runs (the AtomicStream)."""
    from provenance.models import GenerationRun, GenerationStep

    runs = GenerationRun.objects.exclude(status="running").order_by("-created_at").values("pk")[:limit]  # a subquery
    by_run: dict[int, list[int]] = {}
    for run, token in (GenerationStep.objects.filter(run_id__in=runs).order_by("run_id", "position")
                       .values_list("run_id", "token_id")):
        by_run.setdefault(run, []).append(token)
    return [np.asarray(tokens, np.int32) for tokens in by_run.values()]


def boredom(tenant) -> tuple[float, dict]:
    """Mean native.boredom over recent generations' token ids (high: they repeat themselves)."""
    import native

    seqs = [s for s in _generation_tokens() if len(s) >= 4]
    if not seqs:
        return 0.0, {"generations": 0}
    values = [float(native.boredom(s)) for s in seqs]
    return float(np.mean(values)), {"generations": len(seqs), "max": max(values)}


def poor_searches(tenant) -> tuple[float, dict]:
    try:
        from atoms.models import SearchLog  # noqa: F401
    except ImportError:
        raise Unavailable("searches are not logged yet (atoms.models.SearchLog)") from None
    raise Unavailable("search log format not known")


def unstable_concepts(tenant) -> tuple[float, dict]:
    try:
        from concepts import selectors
    except ImportError:
        raise Unavailable("concepts app has no selectors yet") from None
    fn = getattr(selectors, "unstable_concepts", None)
    if fn is None:
        raise Unavailable("concepts.selectors.unstable_concepts does not exist yet")
    found = list(fn())
    return float(len(found)), {"concepts": len(found)}


SIGNALS = {
    "missing_embeddings": missing_embeddings,
    "failed_ingests": failed_ingests,
    "embedding_drift": embedding_drift,
    "rising_costs": rising_costs,
    "dead_letters": dead_letter_growth,
    "boredom": boredom,
    "poor_searches": poor_searches,
    "unstable_concepts": unstable_concepts,
}


def gather(tenant) -> list[dict]:
    out = []
    for kind, fn in SIGNALS.items():
        try:
            value, details = fn(tenant)
            out.append({"kind": kind, "value": float(value), "available": True, "details": details})
        except Unavailable as exc:
            out.append({"kind": kind, "value": 0.0, "available": False, "details": {"reason": str(exc)}})
    return out


def candidates_from(signals: dict[str, dict]) -> list[dict]:
    """The rules that turn signals into candidate actions: [{signal, executor, params, expected_gain, risk, rationale}]."""
    out = []

    def add(kind, executor, params, gain, risk, why):
        out.append({"signal": kind, "executor": executor, "params": params, "expected_gain": float(gain),
                    "risk": float(risk), "rationale": why})

    s = {k: v for k, v in signals.items() if v["available"]}
    if "missing_embeddings" in s and s["missing_embeddings"]["details"].get("missing", 0) > 0:
        d = s["missing_embeddings"]
        add("missing_embeddings", "reembed", {"limit": min(d["details"]["missing"], 1000)}, min(1.0, d["value"]),
            0.1, f"{d['details']['missing']} text atoms have no embedding")
    if "embedding_drift" in s and s["embedding_drift"]["value"] > 0.1:
        d = s["embedding_drift"]
        add("embedding_drift", "recluster", {}, d["value"], 0.3, "newest embeddings drifted from the older ones")
        add("embedding_drift", "reindex", {"op": "rebuild", "model": d["details"]["model"]}, d["value"] / 2, 0.4,
            "rebuild the HNSW graph after drift")
    if "failed_ingests" in s and s["failed_ingests"]["value"] > 0:
        add("failed_ingests", "query", {"sql": "SELECT id, source, files_failed, failures FROM atoms_ingestjob "
                                               "WHERE files_failed > 0 ORDER BY id DESC LIMIT 20"},
            0.1 + 0.1 * s["failed_ingests"]["value"], 0.05, "collect the failing ingests as evidence")
    if "rising_costs" in s and s["rising_costs"]["value"] > 0.5:
        add("rising_costs", "api_call", {"service": "usage_totals"}, 0.1, 0.05, "break the rising cost down by meter")
    if "dead_letters" in s and s["dead_letters"]["value"] > 0:
        add("dead_letters", "api_call", {"service": "dead_letters"}, 0.1, 0.05, "summarise dead letters by task")
    if "boredom" in s and s["boredom"]["value"] > 0.5:
        add("boredom", "recluster", {}, s["boredom"]["value"] / 2, 0.3, "generations repeat themselves")
    if "poor_searches" in s and s["poor_searches"]["value"] > 0.2:
        add("poor_searches", "reindex", {"op": "set_ef_search", "ef_search": 100}, 0.2, 0.2, "searches return poorly")
    return out
