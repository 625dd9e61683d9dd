"""HNSW indexes per embedding model: the vector column has no fixed dimension, so each model gets a
partial expression index with its own dimension (the pgvector way to mix dimensions in one table).
Queries must use the same expression (`vector::vector(D)`) and `model = ...` to use them."""
from django.db import migrations

INDEXED_MODELS = {"all-MiniLM-L6-v2": 384, "image-hist-dct-256-v1": 256, "audio-logmel-stats-256-v1": 256}


def _name(model: str) -> str:
    return "atom_hnsw_" + "".join(c if c.isalnum() else "_" for c in model.lower())


class Migration(migrations.Migration):
    dependencies = [("atoms", "0001_initial")]
    operations = [
        migrations.RunSQL(
            f"CREATE INDEX IF NOT EXISTS {_name(model)} ON atoms_atomembedding "
            f"USING hnsw ((vector::vector({dim})) vector_cosine_ops) WITH (m = 16, ef_construction = 64) "
            f"WHERE model = '{model}'",
            f"DROP INDEX IF EXISTS {_name(model)}",
        )
        for model, dim in INDEXED_MODELS.items()
    ]
