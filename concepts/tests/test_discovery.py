import numpy as np
import pytest
from django.db import connection

from atoms.models import Atom, AtomRelation
from concepts.models import Concept, ConceptEvent, DiscoveryRun
from concepts.services import DiscoveryConfig, concepts_discover, ctfidf_labels

from .helpers import IMAGE_MODEL, blobs, make_atoms

pytestmark = pytest.mark.django_db


def _nmi(a, b) -> float:
    from sklearn.metrics import normalized_mutual_info_score

    return normalized_mutual_info_score(a, b)


def _memberships(atoms) -> list[int]:
    rel = dict(AtomRelation.objects.filter(relation="MEMBER_OF", source__in=atoms).values_list("source_id", "target_id"))
    return [rel.get(a.pk, -1) for a in atoms]


def test_it_discovers_the_clusters_with_k_by_silhouette(alpha):
    connection.set_tenant(alpha.tenant)
    x, truth = blobs(30, 4)
    atoms = make_atoms(x)
    run = concepts_discover(tenant=alpha.tenant)
    assert run.state == "done" and run.k == 4 and run.born == 4 and run.silhouette > 0.8
    assert run.outcome[IMAGE_MODEL]["mode"] == "full"
    concepts = Concept.objects.filter(model=IMAGE_MODEL)
    assert sorted(c.size for c in concepts) == [30, 30, 30, 30]
    assert all(c.atom.modality == "concept" and c.state == "born" and c.cohesion > 0.9 for c in concepts)
    assert all(c.label.startswith("≈ image-") and len(c.representatives) == 3 for c in concepts)
    assert _nmi(truth, _memberships(atoms)) == pytest.approx(1.0)
    weights = AtomRelation.objects.filter(relation="MEMBER_OF").values_list("weight", flat=True)
    assert len(weights) == 120 and max(weights) < 1.0


def test_it_keeps_identity_across_runs_and_assigns_only_new_atoms(alpha):
    connection.set_tenant(alpha.tenant)
    x, _ = blobs(30, 3)
    make_atoms(x)
    first = concepts_discover(tenant=alpha.tenant)
    ids = set(Concept.objects.values_list("id", flat=True))
    again = concepts_discover(tenant=alpha.tenant)
    assert again.outcome[IMAGE_MODEL]["mode"] == "unchanged" and again.atoms_assigned == 0
    extra, _ = blobs(3, 3, seed=0)  # same centers (same seed), 9 new atoms: 10% changed
    make_atoms(extra + 0.01)
    third = concepts_discover(tenant=alpha.tenant)
    assert third.outcome[IMAGE_MODEL]["mode"] == "incremental" and third.atoms_assigned == 9
    assert set(Concept.objects.values_list("id", flat=True)) == ids
    assert sorted(Concept.objects.values_list("size", flat=True)) == [33, 33, 33]
    assert Concept.objects.filter(state="alive").count() == 3 and third.born == 0
    full = concepts_discover(tenant=alpha.tenant, config=DiscoveryConfig(force_full=True))
    assert full.outcome[IMAGE_MODEL]["mode"] == "full" and full.born == 0 and full.died == 0
    assert set(Concept.objects.filter(state="alive").values_list("id", flat=True)) == ids
    assert first.pk < again.pk < third.pk < full.pk


def test_it_records_births_deaths_and_merges(alpha):
    connection.set_tenant(alpha.tenant)
    x, truth = blobs(30, 3, spread=0.05)
    atoms = make_atoms(x)
    concepts_discover(tenant=alpha.tenant)
    old = {c.pk for c in Concept.objects.all()}
    # move cluster 2 far away (its atoms are replaced): one concept dies, one is born
    for a in [a for a, t in zip(atoms, truth, strict=True) if t == 2]:
        a.deleted_at = a.created_at
        a.save()
    moved, _ = blobs(30, 1, seed=7, scale=10.0)
    make_atoms(moved)
    run = concepts_discover(tenant=alpha.tenant)
    assert run.born == 1 and run.died == 1, run.outcome
    assert ConceptEvent.objects.filter(run=run, kind="died").count() == 1
    dead = Concept.objects.get(state="dead")
    assert dead.pk in old
    born = Concept.objects.get(born_run=run)
    assert born.state == "born" and born.pk not in old


def test_it_records_a_merge_when_two_concepts_join(alpha):
    connection.set_tenant(alpha.tenant)
    rng = np.random.default_rng(1)
    a = rng.standard_normal((40, 8)).astype(np.float32) * 0.05
    b = a + np.float32(1.0)
    c = a + np.float32(20.0)
    atoms_b = make_atoms(np.vstack([a, b, c]))[40:80]
    concepts_discover(tenant=alpha.tenant, config=DiscoveryConfig(k_min=3, k_max=3))
    assert Concept.objects.filter(state="born").count() == 3
    # force two clusters: the a and b groups must merge into one concept
    run = concepts_discover(tenant=alpha.tenant, config=DiscoveryConfig(k_min=2, k_max=2, force_full=True))
    assert run.merged == 1 and run.died == 0, run.outcome
    merged = Concept.objects.get(state="merged")
    assert merged.merged_into is not None and merged.merged_into.state == "alive"
    ev = ConceptEvent.objects.get(run=run, kind="merged")
    assert ev.other_id == merged.merged_into_id
    assert len(set(_memberships(atoms_b))) == 1


def test_it_does_nothing_for_a_tenant_with_no_or_few_atoms(alpha):
    connection.set_tenant(alpha.tenant)
    run = concepts_discover(tenant=alpha.tenant)
    assert run.state == "done" and run.k == 0 and "no embeddings" in run.outcome["reason"]
    make_atoms(blobs(2, 2)[0])
    run = concepts_discover(tenant=alpha.tenant)
    assert run.outcome[IMAGE_MODEL]["mode"] == "too_few" and Concept.objects.count() == 0


def test_it_makes_one_concept_of_identical_embeddings(alpha):
    connection.set_tenant(alpha.tenant)
    make_atoms(np.ones((25, 8), np.float32))
    run = concepts_discover(tenant=alpha.tenant)
    assert run.state == "done" and run.outcome[IMAGE_MODEL]["mode"] == "degenerate"
    (concept,) = Concept.objects.all()
    assert concept.size == 25 and run.silhouette is None


def test_it_handles_a_single_modality_and_several_models_apart(alpha):
    connection.set_tenant(alpha.tenant)
    make_atoms(blobs(20, 2, seed=1)[0])
    make_atoms(blobs(20, 3, seed=2, dim=12)[0], modality="audio", model="audio-logmel-stats-256-v1")
    run = concepts_discover(tenant=alpha.tenant)
    assert run.k == 5
    assert Concept.objects.filter(modality="audio", model="audio-logmel-stats-256-v1").count() == 3
    assert Concept.objects.filter(modality="image").count() == 2


def test_it_leaves_previous_concepts_intact_when_a_run_is_interrupted(alpha):
    connection.set_tenant(alpha.tenant)
    make_atoms(blobs(20, 3)[0])
    concepts_discover(tenant=alpha.tenant)
    before = sorted(Concept.objects.values_list("id", "size", "state", "centroid"), key=lambda r: r[0])
    members = AtomRelation.objects.filter(relation="MEMBER_OF").count()
    make_atoms(blobs(20, 2, seed=9, scale=9.0)[0])

    def interrupt(stage):
        if stage.startswith("write:"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        concepts_discover(tenant=alpha.tenant, checkpoint=interrupt)
    run = DiscoveryRun.objects.order_by("-id").first()
    assert run.state == "failed" and "KeyboardInterrupt" in run.error
    after = sorted(Concept.objects.values_list("id", "size", "state", "centroid"), key=lambda r: r[0])
    assert [r[:3] for r in after] == [r[:3] for r in before]
    assert AtomRelation.objects.filter(relation="MEMBER_OF").count() == members
    assert not Atom.objects.filter(modality="concept").exclude(concept__isnull=False).exists()


def test_it_labels_text_concepts_by_class_based_tfidf(alpha):
    connection.set_tenant(alpha.tenant)
    x, truth = blobs(15, 2, dim=384)
    words = {0: "invoice payment refund invoice", 1: "telescope galaxy orbit telescope"}
    texts = [f"{words[t]} note {i}" for i, t in enumerate(truth)]
    make_atoms(x, modality="text", model="all-MiniLM-L6-v2", texts=texts)
    concepts_discover(tenant=alpha.tenant)
    labels = sorted(Concept.objects.values_list("label", flat=True))
    assert labels[0].startswith("invoice") and labels[1].startswith("telescope")
    assert "note" not in labels[0].split()[:2]


def test_it_scores_terms_unique_to_a_class_higher():
    out = ctfidf_labels({0: ["cat cat dog"], 1: ["dog fish fish"]}, top=1)
    assert out == {0: ["cat"], 1: ["fish"]}


def test_it_shows_another_tenant_nothing(alpha, beta):
    connection.set_tenant(alpha.tenant)
    make_atoms(blobs(20, 2)[0])
    concepts_discover(tenant=alpha.tenant)
    assert Concept.objects.count() == 2
    connection.set_tenant(beta.tenant)
    assert Concept.objects.count() == 0 and DiscoveryRun.objects.count() == 0
    run = concepts_discover(tenant=beta.tenant)
    assert run.k == 0 and Concept.objects.count() == 0


def test_it_marks_a_concept_dead_when_all_its_members_are_deleted(alpha):
    connection.set_tenant(alpha.tenant)
    x, _ = blobs(30, 2, seed=5)
    small, _ = blobs(5, 1, seed=6, scale=12.0)
    make_atoms(x)
    few = make_atoms(small)
    concepts_discover(tenant=alpha.tenant, config=DiscoveryConfig(k_min=3, k_max=3))
    target = Concept.objects.get(size=5)
    for a in few:
        a.deleted_at = a.created_at
        a.save()
    run = concepts_discover(tenant=alpha.tenant)
    assert run.outcome[IMAGE_MODEL]["mode"] == "incremental" and run.died == 1
    target.refresh_from_db()
    assert target.state == "dead"
    assert not AtomRelation.objects.filter(relation="MEMBER_OF", target=target.atom).exists()
    assert Concept.objects.filter(state="alive").count() == 2
