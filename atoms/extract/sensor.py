"""Sensor time series from CSV/TSV, JSON arrays or JSON Lines.

Each row needs a time field (``timestamp``, ``time``, ``ts``, ``datetime``, ``date``, ``t``...):
ISO 8601 (naive means UTC) or epoch seconds (values above 1e11 are read as milliseconds).
Numeric fields go to ``metadata["values"]``, the rest to ``metadata["labels"]``.

``bucket_seconds=None``: one SENSOR part per row. Otherwise one part per time bucket of
consecutive rows, with count/mean/min/max per numeric field (rows are expected in time order;
an out-of-order row starts a new bucket part). Parts are linked NEXT in file order.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from datetime import UTC, datetime

from atoms.extract.base import SENSOR, ExtractionError, Extractor, Part, Source, root_part
from atoms.extract.sniff import TIME_FIELDS
from atoms.extract.text import iter_lines_utf8

MAX_JSON_ARRAY_BYTES = 64 * 1024 * 1024


def parse_time(value) -> float:
    """Epoch seconds from ISO 8601 text or an epoch number (s or ms)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    else:
        text = str(value).strip()
        try:
            number = float(text)
        except ValueError:
            dt = datetime.fromisoformat(text)
            if dt.tzinfo is None:
                dt = dt.replace(tzinfo=UTC)
            return dt.timestamp()
    return number / 1000.0 if abs(number) > 1e11 else number


def _number(value):
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return float(str(value).strip())
    except ValueError:
        return None


def split_row(row: dict, lineno: int) -> tuple[float, dict, dict]:
    time_key = next((k for k in row if k and k.strip().lower() in TIME_FIELDS), None)
    if time_key is None:
        raise ExtractionError("sensor.no_timestamp", f"row {lineno} has no time field", row=lineno)
    try:
        epoch = parse_time(row[time_key])
    except (ValueError, TypeError, OverflowError):
        raise ExtractionError("sensor.bad_timestamp", f"row {lineno}: cannot read time "
                              f"{row[time_key]!r}", row=lineno) from None
    values, labels = {}, {}
    for key, value in row.items():
        if key == time_key or key is None:
            continue
        number = _number(value)
        if number is not None:
            values[key] = number
        elif value not in (None, ""):
            labels[key] = value if isinstance(value, (str, int, float, bool)) else json.dumps(value)
    return epoch, values, labels


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).isoformat()


class SensorExtractor(Extractor):
    name = "sensor"
    modalities = (SENSOR,)

    def __init__(self, bucket_seconds: float | None = None):
        self.bucket_seconds = bucket_seconds

    def run(self, source: Source) -> Iterator[Part]:
        root = root_part(source, bucket_seconds=self.bucket_seconds)
        yield root
        rows = (split_row(row, n) for n, row in self._rows(source))
        if self.bucket_seconds:
            yield from self._bucket_parts(root, rows)
        else:
            yield from self._row_parts(root, rows)

    def _rows(self, source: Source) -> Iterator[tuple[int, dict]]:
        ext = source.extension
        if ext in (".csv", ".tsv"):
            reader = csv.DictReader(iter_lines_utf8(source), delimiter="\t" if ext == ".tsv" else ",")
            for n, row in enumerate(reader, start=2):
                yield n, row
            return
        head = source.head(64).lstrip()
        try:
            if head.startswith(b"["):
                if source.size and source.size > MAX_JSON_ARRAY_BYTES:
                    raise ExtractionError("sensor.too_large", "JSON arrays over 64 MiB: use JSON Lines")
                with source.open() as f:
                    data = json.load(f)
                for n, row in enumerate(data, start=1):
                    if not isinstance(row, dict):
                        raise ExtractionError("sensor.corrupt", f"item {n} is not an object")
                    yield n, row
                return
            for n, line in enumerate(iter_lines_utf8(source), start=1):
                if line.strip():
                    row = json.loads(line)
                    if not isinstance(row, dict):
                        raise ExtractionError("sensor.corrupt", f"line {n} is not an object")
                    yield n, row
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ExtractionError("sensor.corrupt", f"{source.name}: {exc}") from None

    def _row_parts(self, root: Part, rows) -> Iterator[Part]:
        prev = None
        for i, (epoch, values, labels) in enumerate(rows):
            key = f"row:{i}"
            body = {"timestamp": _iso(epoch), "values": values, "labels": labels}
            yield root.child(key, modality=SENSOR, mime="application/json", position=i, prev=prev,
                             content=json.dumps(body, sort_keys=True).encode(), time_start=epoch,
                             time_end=epoch, metadata=body)
            prev = key

    def _bucket_parts(self, root: Part, rows) -> Iterator[Part]:
        size = float(self.bucket_seconds)
        state = {"bucket": None, "count": 0, "stats": {}, "first": None, "last": None}
        index, prev = 0, None

        def emit() -> Part:
            start = state["bucket"] * size
            stats = {k: {"count": s[0], "mean": s[1] / s[0], "min": s[2], "max": s[3]}
                     for k, s in sorted(state["stats"].items())}
            body = {"bucket_start": _iso(start), "bucket_seconds": size, "rows": state["count"],
                    "fields": stats}
            return root.child(f"bucket:{index}", modality=SENSOR, mime="application/json",
                              position=index, prev=prev, time_start=start, time_end=start + size,
                              content=json.dumps(body, sort_keys=True).encode(), metadata=body)

        for epoch, values, _labels in rows:
            bucket = int(epoch // size)
            if state["bucket"] is not None and bucket != state["bucket"]:
                yield emit()
                prev, index = f"bucket:{index}", index + 1
                state.update(count=0, stats={})
            state["bucket"] = bucket
            state["count"] += 1
            for k, v in values.items():
                s = state["stats"].setdefault(k, [0, 0.0, v, v])
                s[0], s[1], s[2], s[3] = s[0] + 1, s[1] + v, min(s[2], v), max(s[3], v)
        if state["count"]:
            yield emit()
