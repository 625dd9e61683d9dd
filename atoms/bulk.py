"""The bulk path: many small text atoms in one statement pipeline (COPY → INSERT ... ON CONFLICT),
with their history rows and PART_OF edges, for streams, sensors and benchmarks.

Same guarantees as `atom_ingest`: dedup by SHA-256 within the tenant, all or nothing, embeddings
queued on commit.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field

from django.db import connection, transaction
from django.utils import timezone

from hartonomous.errors import ValidationFailed

from . import signals
from .models import Atom

ATOM_COLUMNS = ("sha256", "modality", "mime", "size", "content", "in_blob", "text", "metadata",
                "source_kind", "source_uri", "created_at")
STAGE_SQL = """CREATE TEMP TABLE atoms_stage (
    sha256 varchar(64), modality varchar(16), mime varchar(100), size bigint, content bytea, in_blob boolean,
    text text, metadata jsonb, source_kind varchar(16), source_uri varchar(2000), created_at timestamptz
) ON COMMIT DROP"""
INSERT_SQL = f"""
WITH new AS (
  INSERT INTO atoms_atom ({", ".join(ATOM_COLUMNS)})
  SELECT {", ".join(f"s.{c}" for c in ATOM_COLUMNS)} FROM atoms_stage s
  WHERE NOT EXISTS (SELECT 1 FROM atoms_atom a WHERE a.sha256 = s.sha256)  -- known bytes skip all work
  ON CONFLICT (sha256) DO NOTHING
  RETURNING id, sha256, modality, mime, size, in_blob, metadata, source_kind, source_uri, created_at
), hist AS (
  INSERT INTO atoms_historicalatom (id, sha256, modality, mime, size, in_blob, metadata, source_kind, source_uri,
                                    time_start, time_end, created_at, deleted_at, history_date,
                                    history_change_reason, history_type, history_user_id)
  SELECT id, sha256, modality, mime, size, in_blob, metadata, source_kind, source_uri, NULL, NULL, created_at,
         NULL, now(), %s, '+', NULL FROM new
)
SELECT id FROM new"""
EDGES_SQL = """
WITH edges AS (
  INSERT INTO atoms_atomrelation (source_id, target_id, relation, weight, metadata, created_at)
  SELECT unnest(%s::bigint[]), %s, 'PART_OF', 1.0, '{}'::jsonb, now()
  ON CONFLICT DO NOTHING
  RETURNING id, source_id, target_id, relation, weight, metadata, created_at
)
INSERT INTO atoms_historicalatomrelation (id, source_id, target_id, relation, weight, metadata, created_at,
                                          history_date, history_change_reason, history_type, history_user_id)
SELECT id, source_id, target_id, relation, weight, metadata, created_at, now(), %s, '+', NULL FROM edges"""


@dataclass
class BulkResult:
    new_ids: list[int] = field(default_factory=list)
    existing: int = 0


def _rows(texts: Iterable[str], metadata: dict, source_kind: str, source_uri: str, modality: str):
    seen, now, meta = set(), timezone.now(), json.dumps(metadata)
    for text in texts:
        if not isinstance(text, str) or not text:
            raise ValidationFailed("Every item must be a non-empty string.")
        data = text.encode("utf-8")
        sha = hashlib.sha256(data).hexdigest()
        if sha in seen:
            continue
        seen.add(sha)
        yield (sha, modality, "text/plain", len(data), data, False, text, meta, source_kind, source_uri, now)


def atom_ingest_texts(*, tenant, texts: Iterable[str], parent_id: int | None = None, metadata: dict | None = None,
                      source_kind: str = "stream", source_uri: str = "", modality: str = "text",
                      reason: str = "bulk ingest") -> BulkResult:
    """Insert texts as atoms (deduplicated), their history, and PART_OF edges to `parent_id`."""
    from .services import _enqueue_embedding

    result = BulkResult()
    with transaction.atomic(), connection.cursor() as cursor:
        raw = cursor.cursor  # the psycopg cursor, for COPY
        raw.execute("DROP TABLE IF EXISTS pg_temp.atoms_stage")  # an earlier call in the same transaction
        raw.execute(STAGE_SQL)
        staged = 0
        with raw.copy(f"COPY atoms_stage ({', '.join(ATOM_COLUMNS)}) FROM STDIN") as copy:
            for row in _rows(texts, metadata or {}, source_kind, source_uri, modality):
                copy.write_row(row)
                staged += 1
        raw.execute(INSERT_SQL, [reason])
        result.new_ids = [row[0] for row in raw.fetchall()]
        result.existing = staged - len(result.new_ids)
        if parent_id is not None and result.new_ids:
            raw.execute(EDGES_SQL, [result.new_ids, parent_id, reason])
        schema, ids = connection.schema_name, list(result.new_ids)
        transaction.on_commit(lambda: _enqueue_embedding(schema, ids))
        if ids:
            transaction.on_commit(lambda: signals.atoms_ingested.send(
                sender=Atom, tenant=tenant, root=None, new_ids=ids, source_kind=source_kind, source_uri=source_uri))
    return result
