"""The HNSW index of each model moves to half precision: `(vector::halfvec(D)) halfvec_cosine_ops`.

A halfvec index is half the size of the float32 one, so each graph hop reads half the memory; on the
1M × 384 benchmark (docs/benchmarks_atoms.md §2, run D) it answers faster at the same recall. The
stored column stays float32: `vector_candidates` orders by `vector::halfvec(D)` (the index expression,
which must stay identical) and reports the exact float32 cosine of the hits; search reranks exactly.
The index keeps its name (autonomy's reindex executor REINDEXes it by name).
"""
import importlib

from django.db import migrations

_0002 = importlib.import_module("atoms.migrations.0002_vector_indexes")
INDEXED_MODELS, _name = _0002.INDEXED_MODELS, _0002._name


def _create(model: str, dim: int, kind: str) -> str:
    return (f"CREATE INDEX IF NOT EXISTS {_name(model)} ON atoms_atomembedding "
            f"USING hnsw ((vector::{kind}({dim})) {kind}_cosine_ops) WITH (m = 16, ef_construction = 64) "
            f"WHERE model = '{model}'")


class Migration(migrations.Migration):
    dependencies = [("atoms", "0004_trigram_head")]
    operations = [
        migrations.RunSQL(
            [f"DROP INDEX IF EXISTS {_name(model)}", _create(model, dim, "halfvec")],
            [f"DROP INDEX IF EXISTS {_name(model)}", _create(model, dim, "vector")],
        )
        for model, dim in INDEXED_MODELS.items()
    ]
