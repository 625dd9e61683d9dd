"""What the atom store tells the layers above it (provenance, concepts) without importing them.

- atoms_ingested(sender, tenant, root, new_ids, source_kind, source_uri): after an ingest commits.
- atom_deleted(sender, tenant, atom): after a soft delete.
- atoms_embedded(sender, schema, atom_ids, model): after embeddings were stored.
Receivers run after the commit (they are sent from transaction.on_commit).
"""
from django.dispatch import Signal

atoms_ingested = Signal()
atom_deleted = Signal()
atoms_embedded = Signal()

# model_file_ingested(sender, tenant, schema, atom): a model file (GGUF, safetensors) was stored as an
# atom; the model layer (inference) turns it into tensor atoms and a Model row.
model_file_ingested = Signal()
