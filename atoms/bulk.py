"""The bulk path: many small text atoms in one statement pipeline (COPY → INSERT ... ON CONFLICT),
with their history rows and PART_OF edges, for streams, sensors and benchmarks.

Same guarantees as `atom_ingest`: dedup by SHA-256 within the tenant, all or nothing, embeddings
queued on commit. Text indexing (tsvector + trigram GIN, most of an atom's insert cost) of a large
batch is deferred: its atoms are stored with `search_vector` NULL, which keeps them out of full-text
and trigram search, and `atoms.index_text` (queued on commit; swept by `atoms.index_missing`) sets it.
"""
from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from django.db import connection, transaction
from django.utils import timezone

from hartonomous.errors import ValidationFailed

from . import signals
from .models import Atom

log = logging.getLogger(__name__)

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
SELECT id, sha256 FROM new"""
DEFER_SQL = "SELECT set_config('atoms.defer_text_index', %s, true)"  # read by the search_vector trigger
INDEX_SQL = """UPDATE atoms_atom SET search_vector = to_tsvector('english'::regconfig, COALESCE(text, ''))
WHERE id = ANY(%s) AND search_vector IS NULL"""
DEFER_ABOVE = 1000  # staged rows; smaller batches are indexed in the insert, as atom_ingest does
INDEX_BATCH = 5000  # atoms per index_text task and per UPDATE
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


def _stage(raw, rows) -> list[str]:
    """COPY the rows into a fresh temp table; returns their digests in order."""
    raw.execute("DROP TABLE IF EXISTS pg_temp.atoms_stage")  # an earlier call in the same transaction
    raw.execute(STAGE_SQL)
    digests = []
    with raw.copy(f"COPY atoms_stage ({', '.join(ATOM_COLUMNS)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)
            digests.append(row[0])
    return digests


def atom_ingest_texts(*, tenant, texts: Iterable[str], parent_id: int | None = None, metadata: dict | None = None,
                      source_kind: str = "stream", source_uri: str = "", modality: str = "text",
                      reason: str = "bulk ingest", defer_text_index: bool | None = None) -> BulkResult:
    """Insert texts as atoms (deduplicated), their history, and PART_OF edges to `parent_id`.

    `defer_text_index`: None = defer above DEFER_ABOVE staged rows; True/False = always/never. Deferred
    atoms are found by full-text and trigram search once `atoms.index_text` has run (or call
    `atoms_index_text` in-process, e.g. in a script without a Celery worker)."""
    from .services import _enqueue_embedding

    result = BulkResult()
    with transaction.atomic(), connection.cursor() as cursor:
        raw = cursor.cursor  # the psycopg cursor, for COPY
        staged = _stage(raw, _rows(texts, metadata or {}, source_kind, source_uri, modality))
        deferred = len(staged) > DEFER_ABOVE if defer_text_index is None else defer_text_index
        if deferred:
            raw.execute(DEFER_SQL, ["on"])
        raw.execute(INSERT_SQL, [reason])
        new = {sha: atom_id for atom_id, sha in raw.fetchall()}
        if deferred:  # later inserts of an enclosing transaction are indexed as usual
            raw.execute(DEFER_SQL, ["off"])
        result.new_ids = [new[sha] for sha in staged if sha in new]  # in input order, whatever the plan
        result.existing = len(staged) - len(result.new_ids)
        if parent_id is not None and result.new_ids:
            raw.execute(EDGES_SQL, [result.new_ids, parent_id, reason])
        schema, ids = connection.schema_name, list(result.new_ids)
        if deferred and ids:
            transaction.on_commit(lambda: _enqueue_text_index(schema, ids))
        transaction.on_commit(lambda: _enqueue_embedding(schema, ids))
        if ids:
            transaction.on_commit(lambda: signals.atoms_ingested.send(
                sender=Atom, tenant=tenant, root=None, new_ids=ids, source_kind=source_kind, source_uri=source_uri))
    return result


def _enqueue_text_index(schema: str, atom_ids: list[int]) -> None:
    """Queue text indexing; if the broker is down the atoms stay committed (not yet searchable by
    text) and the `atoms.index_missing` sweep indexes them later."""
    from .tasks import index_text_task

    try:
        for start in range(0, len(atom_ids), INDEX_BATCH):
            index_text_task.delay(schema, atom_ids[start:start + INDEX_BATCH])
    except Exception as exc:  # kombu raises its own OperationalError family
        log.warning("text indexing not queued (%s); the sweep will retry", exc, extra={"schema": schema})


def atoms_index_text(*, atom_ids: list[int]) -> int:
    """Fill `search_vector` (and so the full-text and trigram indexes) of these atoms where it is
    missing, INDEX_BATCH per transaction; returns how many were indexed."""
    done = 0
    for start in range(0, len(atom_ids), INDEX_BATCH):
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(INDEX_SQL, [list(atom_ids[start:start + INDEX_BATCH])])
            done += cursor.rowcount
    return done


def atoms_text_unindexed(*, limit: int = 100_000) -> list[int]:
    """Atoms still waiting for text indexing (what the sweep queues)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT id FROM atoms_atom WHERE search_vector IS NULL ORDER BY id LIMIT %s", [limit])
        return [row[0] for row in cursor.fetchall()]
