"""One progress manager for long work: draws the CLI bar and pushes to the tenant's dashboard group."""
from __future__ import annotations

import sys
import time

from asgiref.sync import async_to_sync
from tqdm import tqdm


def progress_group(schema_name: str) -> str:
    return f"progress.{schema_name}"


class Progress:
    """`with Progress(schema, "ingest", total=n) as p: p.advance()`; pushes at most 4 times a second."""

    def __init__(self, schema_name: str, job: str, *, total: int | None = None, bar: bool | None = None,
                 unit: str = "it"):
        self.schema_name, self.job, self.total, self.done = schema_name, job, total, 0
        show = sys.stderr.isatty() if bar is None else bar
        self._bar = tqdm(total=total, desc=job, unit=unit, disable=not show, file=sys.stderr)
        self._last_push = 0.0

    def __enter__(self) -> Progress:
        self._push("started")
        return self

    def advance(self, n: int = 1, **info) -> None:
        self.done += n
        self._bar.update(n)
        if time.monotonic() - self._last_push > 0.25:
            self._push("running", **info)

    def __exit__(self, exc_type, exc, tb) -> None:
        self._bar.close()
        self._push("failed" if exc_type else "finished", error=str(exc) if exc else "")

    def _push(self, state: str, **info) -> None:
        self._last_push = time.monotonic()
        message = {"type": "progress.message", "job": self.job, "state": state, "done": self.done,
                   "total": self.total, **info}
        try:
            from channels.layers import get_channel_layer

            layer = get_channel_layer()
            if layer is not None:
                async_to_sync(layer.group_send)(progress_group(self.schema_name), message)
        except Exception:  # a dashboard being down never stops the work
            pass
