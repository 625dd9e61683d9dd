import uuid

from tests.api_matrix import Endpoint


def _make_node(owner):
    """A small lineage (refs unique across tenants, so a foreign tenant cannot hit it by chance)."""
    from django.db import connection

    from provenance.services import activity_record

    connection.set_tenant(owner.tenant)
    try:
        tag = uuid.uuid4().hex
        activity_record(tenant=owner.tenant, kind="generate", agent="matrix", used=[f"atom:m-src-{tag}"],
                        generated=[f"atom:m-out-{tag}"], derived=[(f"atom:m-out-{tag}", f"atom:m-src-{tag}")])
    finally:
        connection.set_schema_to_public()
    return {"node": f"atom:m-out-{tag}", "source": f"atom:m-out-{tag}", "target": f"atom:m-src-{tag}"}


def _make_atom(owner):
    from django.db import connection

    from atoms.extract import Source
    from atoms.services import atom_ingest

    connection.set_tenant(owner.tenant)
    try:
        result = atom_ingest(tenant=owner.tenant, source=Source.from_bytes(f"prov {uuid.uuid4().hex}".encode(), "p.txt"))
    finally:
        connection.set_schema_to_public()
    return {"id": result.root.sha256}


_BAD_LINEAGE = [{"depth": 2}, {"node": ""}, {"node": "atom:x", "depth": 0}, {"node": "atom:x", "depth": 11},
                {"node": "atom:x", "depth": "deep"}, {"node": "atom:x", "direction": "sideways"},
                {"node": "atom:x", "as_of": "yesterday"}, {"node": "atom:x", "as_of": "1990-01-01T00:00:00Z"},
                {"node": "atom:x", "as_of": "2999-01-01T00:00:00Z"}]

ENDPOINTS = [
    Endpoint("lineage", "get", "/api/lineage?node={node}&depth=3&direction=both", "read", make=_make_node,
             invalid_bodies=_BAD_LINEAGE),
    Endpoint("lineage-export-prov", "get", "/api/lineage/export?node={node}&standard=prov", "read", make=_make_node,
             invalid_bodies=[*_BAD_LINEAGE, {"node": "atom:x", "standard": "xml"}]),
    Endpoint("lineage-export-openlineage", "get", "/api/lineage/export?node={node}&standard=openlineage&direction=both",
             "read", make=_make_node),
    Endpoint("lineage-path", "get", "/api/lineage/path?source={source}&target={target}", "read", make=_make_node,
             invalid_bodies=[{"target": "atom:b"}, {"source": "atom:a"}, {"source": "atom:a", "target": "atom:b", "max_depth": 0},
                             {"source": "atom:a", "target": "atom:b", "as_of": "1990-01-01T00:00:00Z"}]),
    Endpoint("atom-impact", "get", "/api/atoms/{id}/impact", "read", make=_make_atom,
             invalid_bodies=[{"as_of": "nope"}, {"as_of": "1990-01-01T00:00:00Z"}]),
    Endpoint("atom-retract", "post", "/api/atoms/{id}/retract", "write", make=_make_atom,
             body=lambda o: {"reason": "matrix"}, invalid_bodies=[{"reason": ["a"]}, {"reason": "r" * 3000}],
             ok_status=201),
]
