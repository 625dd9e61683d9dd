import numpy as np
import pytest
from django.db import connection
from django.utils import timezone

from atoms.models import Atom, AtomRelation
from concepts.binding import BindingConfig, concepts_bind, pair_statistics
from concepts.models import Concept
from concepts.services import concepts_discover

from .helpers import blobs, make_atoms, make_parent

pytestmark = pytest.mark.django_db
AUDIO = "audio-logmel-stats-256-v1"


def _video(digits, per: float = 5.0):
    """One video: for each slot i, 5 frames (1 fps) of image cluster d and one audio segment of
    audio cluster d, d = digits[i]."""
    rng = np.random.default_rng(len(digits))
    img_c = np.random.default_rng(100).standard_normal((10, 8)) * 3
    aud_c = np.random.default_rng(200).standard_normal((10, 8)) * 3
    parent = make_parent()
    frames, ftimes, audio, atimes = [], [], [], []
    for i, d in enumerate(digits):
        for f in range(int(per)):
            frames.append(img_c[d] + rng.standard_normal(8) * 0.05)
            ftimes.append((i * per + f, i * per + f + 1))
        audio.append(aud_c[d] + rng.standard_normal(8) * 0.05)
        atimes.append((i * per, (i + 1) * per))
    make_atoms(np.asarray(frames, np.float32), modality="video_frame", times=ftimes, parent=parent)
    make_atoms(np.asarray(audio, np.float32), modality="audio", model=AUDIO, times=atimes, parent=parent)


def test_it_binds_image_and_audio_concepts_that_share_time_buckets(alpha):
    connection.set_tenant(alpha.tenant)
    digits = [0, 1, 2, 3] * 3
    _video(digits)
    run = concepts_discover(tenant=alpha.tenant)
    assert run.k == 8, run.outcome
    result = concepts_bind(tenant=alpha.tenant)
    assert result.contexts == 12 and result.edges == 4 and result.cross_modal == 4
    members = dict(AtomRelation.objects.filter(relation="MEMBER_OF").values_list("target_id", "source__time_start"))
    for edge in AtomRelation.objects.filter(relation__in=["RELATED_TO", "IS_A"]):
        assert edge.metadata["cross_modal"] and edge.metadata["count"] == 3
        assert edge.weight == pytest.approx(0.03)  # min(count / 100, 1)
        assert edge.metadata["lift"] == pytest.approx(4.0) and edge.metadata["pmi"] == pytest.approx(np.log(4))
        # the two concepts occupy the same slots of the video
        assert members[edge.source_id] // 5 % 4 == members[edge.target_id] // 5 % 4
    again = concepts_bind(tenant=alpha.tenant)
    assert again.edges == 4 and AtomRelation.objects.filter(relation="RELATED_TO").count() == 4


def test_it_drops_frequent_but_uninformative_pairs(alpha):
    connection.set_tenant(alpha.tenant)
    _video([0, 1] * 6)
    concepts_discover(tenant=alpha.tenant)
    n, single, pair = pair_statistics({("t", 1, i): {1, 2, 3 if i % 2 else 4} for i in range(10)})
    assert n == 10 and pair[(1, 2)] == 10 and pair[(1, 3)] == 5
    strict = concepts_bind(tenant=alpha.tenant, config=BindingConfig(min_lift=100.0))
    assert strict.edges == 0 and strict.pairs == 2
    assert not AtomRelation.objects.filter(relation="RELATED_TO").exists()


def test_it_makes_is_a_when_one_concept_lives_inside_another(alpha):
    connection.set_tenant(alpha.tenant)
    x, truth = blobs(12, 3, seed=3)
    groups = {t: x[truth == t] for t in range(3)}
    # doc 0 holds A and B; docs 1-2 only B; docs 3-5 only C: A never appears without B
    layout = [(0, 1), (1,), (1,), (2,), (2,), (2,)]
    for d, kinds in enumerate(layout):
        p = make_parent(f"d{d}.pdf", modality="document")
        make_atoms(np.vstack([groups[k][d * 2:d * 2 + 2] for k in kinds]), parent=p)
    concepts_discover(tenant=alpha.tenant)
    assert Concept.objects.count() == 3
    result = concepts_bind(tenant=alpha.tenant, config=BindingConfig(min_count=1, min_pmi=0.01, min_lift=1.01))
    assert result.contexts == 6 and result.edges == 1
    (edge,) = AtomRelation.objects.filter(relation="IS_A")
    assert Concept.objects.get(atom_id=edge.source_id).size == 2  # A (in one document) IS_A B (in three)
    assert Concept.objects.get(atom_id=edge.target_id).size == 6
    assert edge.metadata["count"] == 1 and edge.metadata["lift"] == pytest.approx(2.0)


def test_it_binds_nothing_in_another_tenant(alpha, beta):
    connection.set_tenant(alpha.tenant)
    _video([0, 1, 2] * 4)
    concepts_discover(tenant=alpha.tenant)
    assert concepts_bind(tenant=alpha.tenant).edges == 3
    connection.set_tenant(beta.tenant)
    result = concepts_bind(tenant=beta.tenant)
    assert result.contexts == 0 and result.edges == 0
    assert not AtomRelation.objects.exists()


def test_an_atom_shown_again_counts_in_the_bucket_of_every_occurrence(alpha):
    """Identical frames are one atom; its PART_OF edge lists every time it is on screen (what ingest
    records): binding must see the digit at each of them, or the repeats are lost."""
    connection.set_tenant(alpha.tenant)
    _video([0, 1, 2, 3] * 3)
    frames = list(Atom.objects.filter(modality="video_frame").order_by("time_start"))
    first = frames[:20]  # the first pass: slots 0-3, five frames each
    for later in frames[20:]:
        twin = first[int(later.time_start) % 20]
        edge = AtomRelation.objects.get(source=twin, relation="PART_OF")
        edge.metadata.setdefault("occurrences", [[twin.time_start, twin.time_end]]).append(
            [later.time_start, later.time_end])
        edge.save()
    Atom.objects.filter(pk__in=[f.pk for f in frames[20:]]).update(deleted_at=timezone.now())
    concepts_discover(tenant=alpha.tenant)
    result = concepts_bind(tenant=alpha.tenant)
    assert result.contexts == 12 and result.edges == 4 and result.cross_modal == 4
    assert all(e.metadata["count"] == 3 for e in AtomRelation.objects.filter(relation__in=["RELATED_TO", "IS_A"]))

