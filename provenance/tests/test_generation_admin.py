"""The admin's GenerationRun pages: the list, and a real run's text highlighted by its top source atoms."""
from __future__ import annotations

from html.parser import HTMLParser

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import Client

from atoms.bulk import atom_ingest_texts
from atoms.models import Atom
from atoms.services import embed_atoms
from inference.generation import GenerationSpec, generation_start
from inference.tests.test_models import smol  # noqa: F401 (module fixture)
from provenance.models import GenerationRun

pytestmark = pytest.mark.django_db

FACTS = ["The Brindlewick cache evicts entries after 917 seconds <b>unless pinned</b>.",
         "Kestrels hover in place while scanning the grass for voles."]
QUESTION = "The Brindlewick cache evicts entries after"


class Tokens(HTMLParser):
    """The token spans of the page: (attributes, text)."""

    def __init__(self):
        super().__init__()
        self.spans, self._open = [], None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "span" and "tok" in (attrs.get("class") or "").split():
            self._open = [attrs, ""]

    def handle_data(self, data):
        if self._open is not None:
            self._open[1] += data

    def handle_endtag(self, tag):
        if tag == "span" and self._open is not None:
            self.spans.append(tuple(self._open))
            self._open = None


@pytest.fixture
def run(smol, alpha):  # noqa: F811
    connection.set_tenant(alpha.tenant)
    ids = atom_ingest_texts(tenant=alpha.tenant, texts=FACTS).new_ids
    embed_atoms(atom_ids=ids)
    by_text = dict(Atom.objects.filter(pk__in=ids).values_list("text", "id"))
    done = list(generation_start(tenant=alpha.tenant, spec=GenerationSpec(model=smol, prompt=QUESTION, k=2,
                                                                            sampling={"max_tokens": 5})))[-1]
    connection.set_schema_to_public()
    return {"run": done["run"], "text": done["text"], "atoms": [by_text[t] for t in FACTS]}


def admin_client(host: str) -> Client:
    connection.set_schema_to_public()
    user = get_user_model().objects.create_superuser("gen-admin", "g@example.com", "pw-123456789")
    client = Client(HTTP_HOST=host)
    client.force_login(user)
    return client


def test_it_shows_the_run_with_each_token_coloured_by_its_top_source(run, alpha):
    client = admin_client(f"{alpha.slug}.localhost")
    response = client.get(f"/admin/provenance/generationrun/{run['run']}/change/")
    assert response.status_code == 200, response.content[:300]
    page = response.content.decode()
    parser = Tokens()
    parser.feed(page)
    assert "917" in run["text"] and "".join(text for _, text in parser.spans) == run["text"]
    connection.set_tenant(alpha.tenant)
    steps = list(GenerationRun.objects.get(pk=run["run"]).steps.all())
    assert len(parser.spans) == len(steps) == 5
    brindle = run["atoms"][0]
    for (attrs, _), step in zip(parser.spans, steps, strict=True):
        assert attrs["data-atom"] == str(step.top_atom_id or "")
        assert f"logprob {step.logprob:.3f}" in attrs["title"] and "alternatives:" in attrs["title"]
        if step.top_atom_id:
            assert "background" in attrs["style"] and f"atom {step.top_atom_id} {step.top_mass:.3f}" in attrs["title"]
    digits = [attrs for attrs, text in parser.spans if text.strip().isdigit()]
    assert digits and all(a["data-atom"] == str(brindle) for a in digits)
    colours = {a["data-atom"]: a["style"] for a, _ in parser.spans if a.get("style")}
    assert len(set(colours.values())) == len(colours)  # one colour per source
    # the legend: atom id, escaped snippet, mass; the steps table; read-only
    assert f'<tr data-atom="{brindle}">' in page and "&lt;b&gt;unless pinned&lt;/b&gt;" in page
    assert "<b>unless pinned</b>" not in page and 'id="generation-steps"' in page
    assert 'name="_save"' not in page
    assert client.post(f"/admin/provenance/generationrun/{run['run']}/change/", {}).status_code == 403
    assert client.get(f"/admin/provenance/generationrun/{run['run']}/delete/").status_code == 403


def test_it_lists_the_runs_of_the_tenant_only(run, alpha, beta):
    mine = admin_client(f"{alpha.slug}.localhost").get("/admin/provenance/generationrun/")
    assert mine.status_code == 200 and f"/admin/provenance/generationrun/{run['run']}/change/" in mine.content.decode()
    assert b"smollm2" in mine.content and b"completed" in mine.content
    theirs = Client(HTTP_HOST=f"{beta.slug}.localhost")
    theirs.force_login(get_user_model().objects.get(username="gen-admin"))
    listing = theirs.get("/admin/provenance/generationrun/")
    assert listing.status_code == 200 and b"smollm2" not in listing.content
    assert f"/generationrun/{run['run']}/change/" not in listing.content.decode()
    detail = theirs.get(f"/admin/provenance/generationrun/{run['run']}/change/")
    assert detail.status_code == 302 and detail["Location"].endswith("/admin/")  # "does not exist" redirect
    public = Client(HTTP_HOST="localhost")  # the platform host has no runs table: hidden, not a 500
    public.force_login(get_user_model().objects.get(username="gen-admin"))
    assert public.get("/admin/provenance/generationrun/").status_code == 403
    assert public.get(f"/admin/provenance/generationrun/{run['run']}/change/").status_code == 403
