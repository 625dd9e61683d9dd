"""manage.py ingest PATH... --tenant T: recursive, parallel, resumable, with a progress bar and a summary."""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.db import close_old_connections, connection

from hartonomous.errors import ApplicationError
from hartonomous.progress import Progress

from ...extract import Source
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
        self.stdout.write(f"atoms new: {totals['new']}  deduplicated files: {totals['deduplicated']}  "
                          f"failed: {totals['failed']}")
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
            close_old_connections()
        return ("new", result.atoms_new) if result.created else ("deduplicated", 1)
