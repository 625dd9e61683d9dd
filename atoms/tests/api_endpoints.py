import uuid

from tests.api_matrix import Endpoint


def _make_atom(owner):
    from django.db import connection

    from atoms.extract import Source
    from atoms.services import atom_ingest

    connection.set_tenant(owner.tenant)
    try:
        text = f"matrix atom {uuid.uuid4().hex}"
        result = atom_ingest(tenant=owner.tenant, source=Source.from_bytes(text.encode(), "m.txt"))
    finally:
        connection.set_schema_to_public()
    return {"id": result.root.pk}


def _ids(body):
    return [row["id"] for row in body["results"]]


ENDPOINTS = [
    Endpoint("atom-list", "get", "/api/atoms", "read", make=_make_atom, list_ids=_ids),
    Endpoint("atom-create", "post", "/api/atoms", "write", body=lambda o: {"text": f"hello {uuid.uuid4().hex}"},
             invalid_bodies=[{}, {"text": ""}, {"text": ["a"]}, {"text": "x", "metadata": "nope"},
                             {"text": "x", "name": "n" * 300}],
             ok_status=201),
    Endpoint("atom-get", "get", "/api/atoms/{id}", "read", make=_make_atom),
    Endpoint("atom-content", "get", "/api/atoms/{id}/content", "read", make=_make_atom),
    Endpoint("atom-delete", "delete", "/api/atoms/{id}", "write", make=_make_atom),
    Endpoint("search", "post", "/api/search/semantic", "read",
             body=lambda o: {"text": "hello", "k": 3, "weights": {"vector": 0}},
             invalid_bodies=[{}, {"text": "x", "k": 0}, {"text": "x", "k": 10**6}, {"vector": [1e39]},
                             {"vector": ["nan"]}, {"vector": []}, {"text": "x", "weights": {"bogus": 1}},
                             {"text": "x", "filters": {"modality": ["smell"]}},
                             {"text": "x", "filters": {"region": [0, 0, 1]}}]),
]
