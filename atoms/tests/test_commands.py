"""The ingest and search commands against the real store."""
from __future__ import annotations

import uuid
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from atoms.models import Atom, IngestJob

pytestmark = pytest.mark.django_db


def test_it_ingests_a_folder_recursively_and_resumes(alpha, tmp_path):
    tag = uuid.uuid4().hex
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.md").write_text(f"# A\n\nalpha text {tag}\n")
    (tmp_path / "sub" / "b.py").write_text(f"def b():\n    return '{tag}'\n")
    (tmp_path / "sub" / "bad.txt").write_bytes("non utf8 \xe9\xe8 ".encode("latin-1") * 40)
    out = StringIO()
    call_command("ingest", str(tmp_path), tenant="alpha", no_progress=True, stdout=out)
    assert "failed: 1" in out.getvalue() and "bad.txt" in out.getvalue()
    connection.set_tenant(alpha.tenant)
    job = IngestJob.objects.latest("id")
    assert job.state == "done" and job.files_failed == 1 and job.atoms_new >= 2
    again = StringIO()
    call_command("ingest", str(tmp_path), tenant="alpha", no_progress=True, stdout=again)
    assert "atoms new: 0  deduplicated files: 2" in again.getvalue()
    assert Atom.objects.filter(source_uri__endswith="a.md").exists()


def test_it_refuses_unknown_tenants_and_paths(tmp_path):
    with pytest.raises(CommandError):
        call_command("ingest", str(tmp_path), tenant="nobody_here")
    with pytest.raises(CommandError):
        call_command("ingest", str(tmp_path / "missing"), tenant="alpha")
