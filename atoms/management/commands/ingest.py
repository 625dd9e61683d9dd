"""manage.py ingest PATH... --tenant T: recursive, parallel, resumable, with a progress bar and a summary."""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.db import connection
from django.utils import timezone

from hartonomous.errors import ApplicationError
from hartonomous.progress import Progress

from ...extract import Source
from ...models import IngestJob
from ...services import atom_ingest
from ._tenant import activate_tenant


def _files(paths: list[str]) -> list[Path]:
    found = []
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise CommandError(f"{raw}: no such file or directory")
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
        else:
            found.append(path)
    return found


class Command(BaseCommand):
    help = "Ingest files and folders as atoms (re-running skips what is already stored)."

    def add_arguments(self, parser):
        parser.add_argument("paths", nargs="+")
        parser.add_argument("--tenant", required=True)
        parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1))
        parser.add_argument("--no-progress", action="store_true")

    def handle(self, *args, paths, tenant, workers, no_progress, **options):
        tenant_obj = activate_tenant(tenant)
        files = _files(paths)
        job = IngestJob.objects.create(source=" ".join(paths)[:2000])
        totals = {"new": 0, "deduplicated": 0, "failed": 0}
        failures: list[tuple[str, str]] = []
        with Progress(tenant_obj.schema_name, "ingest", total=len(files), bar=not no_progress, unit="file") as bar:
            with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
                futures = {pool.submit(self._one, tenant_obj, path): path for path in files}
                for future in as_completed(futures):
                    outcome, detail = future.result()
                    totals[outcome] += detail if outcome == "new" else 1
                    if outcome == "failed":
                        failures.append((str(futures[future]), detail))
                    bar.advance()
        connection.set_tenant(tenant_obj)
        job.atoms_new, job.atoms_deduplicated, job.files_failed = totals["new"], totals["deduplicated"], totals["failed"]
        job.failures = [{"path": p, "reason": r} for p, r in failures][:1000]
        job.state = IngestJob.State.FAILED if failures and len(failures) == len(files) else IngestJob.State.DONE
        job.finished_at = timezone.now()
        job.save()
        self.stdout.write(f"atoms new: {totals['new']}  deduplicated files: {totals['deduplicated']}  "
                          f"failed: {totals['failed']}  (job {job.pk})")
        for path, reason in failures:
            self.stdout.write(f"  failed {path}: {reason}")
        if failures and len(failures) == len(files):
            raise CommandError("every file failed")

    @staticmethod
    def _one(tenant, path: Path) -> tuple[str, object]:
        connection.set_tenant(tenant)
        try:
            result = atom_ingest(tenant=tenant, source=Source.from_path(path), source_kind="file",
                                 source_uri=str(path.resolve()))
        except ApplicationError as exc:
            return "failed", f"{exc.code}: {exc.message}"
        finally:
            connection.close()  # this pool thread's own connection
        return ("new", result.atoms_new) if result.created else ("deduplicated", 1)
