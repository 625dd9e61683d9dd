"""An atom that occurs several times in one source (an identical video frame shown again) keeps every
occurrence on its PART_OF edge. Real ffmpeg video, real database."""
from __future__ import annotations

import shutil
import subprocess

import pytest
from django.db import connection

from atoms.extract import Source
from atoms.models import AtomRelation
from atoms.services import atom_ingest

pytestmark = [pytest.mark.django_db,
              pytest.mark.skipif(not shutil.which("ffmpeg"), reason="ffmpeg not installed")]


def red_blue_red(tmp_path):
    """6 s of video, 1 fps: red 2 s, blue 2 s, red 2 s, losslessly coded (identical frames decode alike)."""
    path = tmp_path / "rbr.mkv"
    colours = [("red", 2), ("blue", 2), ("red", 2)]
    inputs = [a for c, d in colours for a in ("-f", "lavfi", "-i", f"color=c={c}:size=64x48:rate=1:duration={d}")]
    subprocess.run(["ffmpeg", "-v", "error", *inputs, "-filter_complex", "[0:v][1:v][2:v]concat=n=3:v=1[v]",
                    "-map", "[v]", "-c:v", "ffv1", str(path)], check=True)
    return path


def test_repeated_frames_keep_every_occurrence(alpha, tmp_path):
    connection.set_tenant(alpha.tenant)
    path = red_blue_red(tmp_path)
    root = atom_ingest(tenant=alpha.tenant, source=Source.from_path(path), source_kind="file").root
    edges = list(AtomRelation.objects.filter(target=root, relation="PART_OF", source__modality="video_frame")
                 .select_related("source").order_by("source__time_start"))
    assert len(edges) == 2  # two distinct frames: red and blue
    red, blue = edges
    assert [o[0] for o in red.metadata["occurrences"]] == [0.0, 1.0, 4.0, 5.0]
    assert [o[0] for o in blue.metadata["occurrences"]] == [2.0, 3.0]
    assert red.source.time_start == 0.0  # the atom keeps its first time
    again = atom_ingest(tenant=alpha.tenant, source=Source.from_path(path), source_kind="file")
    assert again.root.pk == root.pk
    assert AtomRelation.objects.get(pk=red.pk).metadata["occurrences"] == red.metadata["occurrences"]
