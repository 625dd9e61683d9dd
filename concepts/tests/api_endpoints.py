from tests.api_matrix import Endpoint


def _make_concept(owner):
    from django.db import connection

    from concepts.services import concepts_discover
    from concepts.tests.helpers import blobs, make_atoms

    connection.set_tenant(owner.tenant)
    try:
        atoms = make_atoms(blobs(6, 2, seed=11)[0])
        concepts_discover(tenant=owner.tenant)
        from concepts.models import Concept

        concept = Concept.objects.filter(atom__relations_in__source=atoms[0]).first()
    finally:
        connection.set_schema_to_public()
    return {"id": concept.pk}


def _ids(body):
    return [row["id"] for row in body["results"]]


ENDPOINTS = [
    Endpoint("concept-list", "get", "/api/concepts", "read", make=_make_concept, list_ids=_ids,
             invalid_bodies=[{"state": "zombie"}, {"modality": "smell"}, {"min_size": "-1"}, {"limit": "0"},
                             {"min_size": "x"}]),
    Endpoint("concept-get", "get", "/api/concepts/{id}", "read", make=_make_concept,
             invalid_bodies=[{"members": "0"}, {"members": "100000"}, {"members": "many"}]),
]
