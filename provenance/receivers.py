"""The atom store's signals, recorded as provenance activities.

The signals are sent after the atom transaction commits, so a failure here cannot undo an ingest; it
is logged with the correlation id and the ingest stays (the graph can be rebuilt from atoms).
"""
from __future__ import annotations

import logging

from django_tenants.utils import schema_context

from hartonomous import correlation

from .services import activity_record

log = logging.getLogger(__name__)
INGEST_AGENT = "ingest"


def _attrs(**extra) -> dict:
    cid = correlation.get()
    return {k: v for k, v in {**extra, "correlation_id": cid}.items() if v not in (None, "")}


INLINE_LIMIT = 200  # bigger ingests are recorded by a task, so bulk ingest speed does not pay for it


def on_atoms_ingested(sender, tenant=None, root=None, new_ids=(), source_kind="", source_uri="", **kwargs) -> None:
    new_ids = [int(i) for i in (new_ids or [])]
    if tenant is None or (not new_ids and root is None):
        return
    if len(new_ids) > INLINE_LIMIT:
        from .tasks import record_ingest_task

        try:
            record_ingest_task.delay(tenant.schema_name, root.pk if root is not None else None, new_ids,
                                     source_kind, source_uri)
            return
        except Exception:  # broker down: record inline rather than lose the activity
            log.warning("provenance: ingest recording not queued; recording inline")
    record_ingest(tenant=tenant, root=root, new_ids=new_ids, source_kind=source_kind, source_uri=source_uri)


def record_ingest(*, tenant, root, new_ids: list[int], source_kind: str, source_uri: str) -> None:
    try:
        with schema_context(tenant.schema_name):
            if root is not None:
                root_spec = ("atom", str(root.pk), root.sha256[:12])
                parts = [("atom", str(i)) for i in new_ids if i != root.pk]
                if not parts and root.pk not in new_ids:
                    return  # nothing new: the same bytes again
                activity_record(tenant=tenant, kind="ingest", agent=INGEST_AGENT, generated=[root_spec],
                                derived=[(p, root_spec) for p in parts],
                                attributes=_attrs(source_kind=source_kind, source_uri=source_uri, atoms=len(new_ids)))
            else:
                activity_record(tenant=tenant, kind="ingest", agent=INGEST_AGENT,
                                generated=[("atom", str(i)) for i in new_ids],
                                attributes=_attrs(source_kind=source_kind, source_uri=source_uri, atoms=len(new_ids)))
    except Exception:  # never undo or fail an ingest that already committed
        log.exception("provenance: could not record an ingest for %s", getattr(tenant, "schema_name", tenant))


def on_atom_deleted(sender, tenant=None, atom=None, **kwargs) -> None:
    if tenant is None or atom is None:
        return
    try:
        with schema_context(tenant.schema_name):
            activity_record(tenant=tenant, kind="delete", agent="api", used=[("atom", str(atom.pk), atom.sha256[:12])],
                            attributes=_attrs(atom=atom.pk))
    except Exception:
        log.exception("provenance: could not record a delete for %s", getattr(tenant, "schema_name", tenant))


def on_atoms_embedded(sender, schema=None, atom_ids=(), model="", **kwargs) -> None:
    atom_ids = list(atom_ids or [])
    if not schema or not atom_ids:
        return
    try:
        from tenants.models import Tenant

        tenant = Tenant.objects.get(schema_name=schema)
        with schema_context(schema):
            model_name = str(model or "embedder")
            activity_record(tenant=tenant, kind="embed", agent=("model", model_name, model_name),
                            used=[("atom", str(i)) for i in atom_ids], attributes=_attrs(model=model_name,
                                                                                         atoms=len(atom_ids)))
    except Exception:
        log.exception("provenance: could not record an embedding for %s", schema)
