"""Reads of concepts: lists with filters, one concept with its members, runs and bindings."""
from __future__ import annotations

from django.db.models import QuerySet

from atoms.models import Atom, AtomRelation, RelationType

from .models import Concept, DiscoveryRun

LIVE = (Concept.State.BORN, Concept.State.ALIVE)


def concepts_list(*, modality: str | None = None, model: str | None = None, states=LIVE,
                  min_size: int = 0, label: str | None = None) -> QuerySet[Concept]:
    qs = Concept.objects.filter(state__in=list(states), size__gte=min_size)
    if modality:
        qs = qs.filter(modality=modality)
    if model:
        qs = qs.filter(model=model)
    if label:
        qs = qs.filter(label__icontains=label)
    return qs


def concept_by_id(*, concept_id: int) -> Concept | None:
    if not 0 < concept_id < 2**63:
        return None
    return Concept.objects.select_related("merged_into", "born_run", "run").filter(pk=concept_id).first()


def concept_members(*, concept: Concept, limit: int = 50) -> list[tuple[Atom, float]]:
    """The members nearest the centroid first: (atom, distance)."""
    rows = list(AtomRelation.objects.filter(relation=RelationType.MEMBER_OF, target_id=concept.atom_id,
                                            source__deleted_at__isnull=True)
                .order_by("weight", "source_id").values_list("source_id", "weight")[:limit])
    atoms = Atom.objects.in_bulk([a for a, _ in rows])
    return [(atoms[a], w) for a, w in rows if a in atoms]


def concept_bindings(*, concept: Concept, limit: int = 50) -> list[dict]:
    """Binding edges touching this concept, strongest (PMI) first, with the other concept's id."""
    edges = AtomRelation.objects.filter(relation__in=[RelationType.RELATED_TO, RelationType.IS_A],
                                        metadata__binding=True)
    out = []
    others = {}
    for e in list(edges.filter(source_id=concept.atom_id)) + list(edges.filter(target_id=concept.atom_id)):
        other_atom = e.target_id if e.source_id == concept.atom_id else e.source_id
        others[other_atom] = None
        out.append({"relation": e.relation, "direction": "out" if e.source_id == concept.atom_id else "in",
                    "other_atom": other_atom, "confidence": e.weight, **{k: e.metadata.get(k) for k in
                                                                           ("count", "pmi", "npmi", "lift", "cross_modal")}})
    ids = dict(Concept.objects.filter(atom_id__in=list(others)).values_list("atom_id", "id"))
    labels = dict(Concept.objects.filter(atom_id__in=list(others)).values_list("atom_id", "label"))
    for row in out:
        row["concept"], row["label"] = ids.get(row["other_atom"]), labels.get(row["other_atom"], "")
        del row["other_atom"]
    return sorted(out, key=lambda r: -(r["pmi"] or 0))[:limit]


def runs_recent(*, limit: int = 20) -> QuerySet[DiscoveryRun]:
    return DiscoveryRun.objects.all()[:limit]
