"""The atom endpoints through the full middleware stack (tenant by key, scopes, error shape)."""
from __future__ import annotations

import uuid

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import override_settings

from tests.api_matrix import assert_error_shape

pytestmark = pytest.mark.django_db


def test_it_answers_201_then_200_for_the_same_text(alpha, api):
    client = api(alpha.keys["write"])
    body = {"text": f"idempotent {uuid.uuid4().hex}", "metadata": {"lang": "en"}}
    first = client.post("/api/atoms", body)
    second = client.post("/api/atoms", body)
    assert first.status_code == 201 and second.status_code == 200
    assert first.json()["atom"]["sha256"] == second.json()["atom"]["sha256"]
    assert second.json()["created"] is False


def test_it_ingests_a_multipart_upload_and_serves_ranges(alpha, api):
    payload = (f"# Title {uuid.uuid4().hex}\n\n" + "Paragraph about ranges.\n\n" * 40).encode()
    upload = SimpleUploadedFile("doc.md", payload, content_type="text/markdown")
    client = api(alpha.keys["write"])
    created = client.client.post("/api/atoms", {"file": upload, "metadata": '{"kind": "doc"}'}, format="multipart")
    assert created.status_code == 201, created.content
    atom = created.json()["atom"]
    assert atom["size"] == len(payload) and atom["metadata"]["kind"] == "doc"
    whole = client.get(f"/api/atoms/{atom['sha256']}/content")
    assert whole.status_code == 200 and b"".join(whole.streaming_content if whole.streaming else [whole.content]) == payload
    part = client.get(f"/api/atoms/{atom['id']}/content", HTTP_RANGE="bytes=2-9")
    assert part.status_code == 206 and part["Content-Range"] == f"bytes 2-9/{len(payload)}"
    assert _body(part) == payload[2:10]
    tail = client.get(f"/api/atoms/{atom['id']}/content", HTTP_RANGE="bytes=-5")
    assert _body(tail) == payload[-5:]
    assert_error_shape(client.get(f"/api/atoms/{atom['id']}/content", HTTP_RANGE=f"bytes={len(payload)}-"), 416)


def _body(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


def test_it_refuses_oversized_uploads(alpha, api):
    with override_settings(MAX_UPLOAD_BYTES=1000):
        upload = SimpleUploadedFile("big.txt", b"x" * 5000, content_type="text/plain")
        response = api(alpha.keys["write"]).client.post("/api/atoms", {"file": upload}, format="multipart")
    assert_error_shape(response, 413)


@pytest.mark.parametrize("name,payload", [
    ("latin.txt", "ça va très bien ".encode("latin-1") * 20),
    ("broken.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 30),
    ("empty.txt", b""),
    ("cut.wav", b"RIFF\x24\x08\x00\x00WAVEfmt "),
])
def test_it_rejects_bad_files_and_stores_nothing(name, payload, alpha, api):
    from django.db import connection

    from atoms.models import Atom

    upload = SimpleUploadedFile(name, payload)
    response = api(alpha.keys["write"]).client.post("/api/atoms", {"file": upload}, format="multipart")
    assert_error_shape(response)
    connection.set_tenant(alpha.tenant)
    import hashlib

    assert not Atom.objects.filter(sha256=hashlib.sha256(payload).hexdigest()).exists()


def test_deleted_atoms_disappear_but_keep_history(alpha, api):
    client = api(alpha.keys["write"])
    atom = client.post("/api/atoms", {"text": f"to delete {uuid.uuid4().hex}"}).json()["atom"]
    assert client.delete(f"/api/atoms/{atom['id']}").json()["deleted"] is True
    assert_error_shape(client.get(f"/api/atoms/{atom['id']}"), 404)
    listed = [a["id"] for a in client.get("/api/atoms").json()["results"]]
    assert atom["id"] not in listed


def test_it_lists_with_filters(alpha, api):
    client = api(alpha.keys["write"])
    tag = uuid.uuid4().hex
    client.post("/api/atoms", {"text": f"filtered {tag}", "metadata": {"tag": tag}})
    found = client.get("/api/atoms", {"metadata": f'{{"tag": "{tag}"}}', "modality": "text"}).json()["results"]
    assert len(found) == 1
    assert_error_shape(client.get("/api/atoms", {"modality": "smell"}), 400)
    assert_error_shape(client.get("/api/atoms", {"metadata": "[1,2]"}), 400)


def test_it_searches_through_the_api(alpha, api):
    from django.db import connection

    from atoms.services import embed_atoms

    client = api(alpha.keys["write"])
    tag = uuid.uuid4().hex[:8]
    made = client.post("/api/atoms", {"text": f"Volcanoes erupt lava and ash. {tag}", "metadata": {"tag": tag}}).json()
    connection.set_tenant(alpha.tenant)
    embed_atoms(atom_ids=[made["atom"]["id"]])
    body = client.post("/api/search/semantic", {"text": "lava eruption", "k": 5, "filters": {"metadata": {"tag": tag}}}).json()
    assert body["count"] == 1 and body["results"][0]["atom"]["id"] == made["atom"]["id"]
    assert "vector" in body["results"][0]["why"]
    wrong = client.post("/api/search/semantic", {"vector": [0.1] * 17, "k": 3})
    assert_error_shape(wrong, 400)


def test_it_searches_by_vector_meters_it_and_keeps_tenants_apart(alpha, beta, api):
    from django.db import connection

    from atoms.models import AtomEmbedding
    from atoms.services import embed_atoms
    from billing.models import UsageEvent
    from billing.selectors import credit_balance

    tag = uuid.uuid4().hex[:8]
    made = api(alpha.keys["write"]).post("/api/atoms", {"text": f"Glaciers carve valleys. {tag}",
                                                        "metadata": {"tag": tag}}).json()
    connection.set_tenant(alpha.tenant)
    embed_atoms(atom_ids=[made["atom"]["id"]])
    vector = [float(v) for v in AtomEmbedding.objects.get(atom_id=made["atom"]["id"]).vector]
    connection.set_schema_to_public()
    before = credit_balance(tenant=alpha.tenant)
    body = {"vector": vector[:-1] + [0], "k": 1, "filters": {"metadata": {"tag": tag}}}  # an int among floats
    found = api(alpha.keys["read"]).post("/api/search/semantic", body, HTTP_X_CORRELATION_ID=f"vec-{tag}")
    assert found.status_code == 200 and found.json()["results"][0]["atom"]["id"] == made["atom"]["id"]
    assert found.json()["results"][0]["why"]["cosine"] > 0.99
    assert credit_balance(tenant=alpha.tenant) < before
    again = api(alpha.keys["read"]).post("/api/search/semantic", body, HTTP_X_CORRELATION_ID=f"vec-{tag}")
    assert again.status_code == 200  # the same correlation id twice: two searches ran, two are billed
    assert UsageEvent.objects.filter(tenant=alpha.tenant, meter="search.query", correlation_id=f"vec-{tag}").count() == 2
    assert api(beta.keys["read"]).post("/api/search/semantic", body).json() == {"results": [], "count": 0}


@pytest.mark.parametrize("bad,where", [(["x"], "0"), ([0.1, 10**400], "1"), ([0.2, 4e38], "1"),
                                       ([0.3, "1e39"], "1"), ([0.1] * 4097, None)])
def test_it_reports_bad_vector_elements_by_index(bad, where, alpha, api):
    response = api(alpha.keys["read"]).post("/api/search/semantic", {"vector": bad, "k": 3})
    fields = assert_error_shape(response, 400)["details"]["fields"]
    assert where is None or where in fields["vector"]
