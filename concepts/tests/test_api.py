import pytest
from django.db import connection

from concepts.binding import concepts_bind
from concepts.services import concepts_discover
from tests.api_matrix import assert_error_shape

from .helpers import blobs, make_atoms
from .test_binding import _video

pytestmark = pytest.mark.django_db


def test_it_lists_concepts_and_shows_members_nearest_first(alpha, api):
    connection.set_tenant(alpha.tenant)
    x, _ = blobs(12, 2)
    make_atoms(x, modality="text", model="all-MiniLM-L6-v2",
               texts=[f"{'apple pear' if i < 12 else 'rocket moon'} {i}" for i in range(24)])
    concepts_discover(tenant=alpha.tenant)
    connection.set_schema_to_public()
    client = api(alpha.keys["read"])
    body = client.get("/api/concepts").json()
    assert len(body["results"]) == 2 and {r["size"] for r in body["results"]} == {12}
    labels = sorted(r["label"] for r in body["results"])
    assert set(labels[0].split()[:2]) == {"apple", "pear"} and set(labels[1].split()[:2]) == {"rocket", "moon"}
    one = client.get(f"/api/concepts/{body['results'][0]['id']}", {"members": 5}).json()
    assert len(one["members"]) == 5 and len(one["centroid"]) == 384
    distances = [m["distance"] for m in one["members"]]
    assert distances == sorted(distances)
    assert one["members"][0]["snippet"] and one["members"][0]["content_url"] is None
    assert one["events"][0]["kind"] == "born"
    assert client.get("/api/concepts", {"modality": "image"}).json()["results"] == []
    assert len(client.get("/api/concepts", {"state": "dead"}).json()["results"]) == 0


def test_it_shows_media_members_with_content_urls_and_bindings(alpha, api):
    connection.set_tenant(alpha.tenant)
    _video([0, 1] * 6)
    concepts_discover(tenant=alpha.tenant)
    concepts_bind(tenant=alpha.tenant)
    connection.set_schema_to_public()
    client = api(alpha.keys["read"])
    frames = client.get("/api/concepts", {"modality": "video_frame"}).json()["results"]
    assert len(frames) == 2
    one = client.get(f"/api/concepts/{frames[0]['id']}").json()
    assert one["members"][0]["content_url"] == f"/api/atoms/{one['members'][0]['atom']}/content"
    assert one["members"][0]["time_start"] is not None
    (binding,) = one["bindings"]
    assert binding["cross_modal"] and binding["confidence"] == pytest.approx(0.06) and binding["lift"] == 2.0


def test_it_answers_404_for_unknown_or_huge_ids(alpha, api):
    client = api(alpha.keys["read"])
    assert_error_shape(client.get("/api/concepts/999999"), 404)
    assert_error_shape(client.get(f"/api/concepts/{10**30}"), 404)
