"""The admin's rendered neighbourhood graph (server-side SVG) and the Celery task wrapper."""
from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import Client

from provenance.graphsvg import neighbourhood_svg
from provenance.models import ProvNode
from provenance.selectors import lineage
from provenance.services import activity_record

pytestmark = pytest.mark.django_db


def _node(tenant):
    connection.set_tenant(tenant)
    activity_record(tenant=tenant, kind="generate", agent="svg<&>", used=["atom:svg-in"], generated=["atom:svg-out"],
                    derived=[("atom:svg-out", "atom:svg-in")])
    return ProvNode.objects.get(kind="atom", ref="svg-out")


def test_it_draws_the_neighbourhood_as_svg(alpha):
    node = _node(alpha.tenant)
    graph = lineage(node=node, depth=2, direction="both")
    svg = neighbourhood_svg(graph)
    root = ET.fromstring(svg)  # well-formed, labels escaped
    ns = "{http://www.w3.org/2000/svg}"
    assert len(root.findall(f".//{ns}circle")) == len(graph.nodes)
    assert len(root.findall(f".//{ns}line")) == len(graph.edges)
    assert "svg&lt;&amp;&gt;" in svg


def test_it_serves_the_graph_page_in_the_admin(alpha):
    node = _node(alpha.tenant)
    connection.set_schema_to_public()
    user = get_user_model().objects.create_superuser("prov-admin", "p@example.com", "pw-123456789")
    client = Client(HTTP_HOST=f"{alpha.slug}.localhost")
    client.force_login(user)
    response = client.get(f"/admin/provenance/provnode/{node.pk}/graph/?depth=2")
    assert response.status_code == 200, response.content[:300]
    assert b"<svg" in response.content and b"svg-out" in response.content
    assert client.get(f"/admin/provenance/provnode/{node.pk + 10**6}/graph/").status_code == 404
    assert Client(HTTP_HOST=f"{alpha.slug}.localhost").get(
        f"/admin/provenance/provnode/{node.pk}/graph/").status_code == 302  # login required


def test_it_runs_the_replication_task(alpha, replica):
    from provenance.tasks import replicate_all_task, replicate_task

    _node(alpha.tenant)
    assert replicate_task.apply(args=[alpha.slug]).get() > 0
    assert replicate_task.apply(args=[alpha.slug]).get() == 0
    assert replicate_all_task.name == "provenance.replicate_all"
