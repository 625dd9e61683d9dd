"""Sensor extraction: CSV and JSON time series rows as parts, bucketed, with clear errors."""
from __future__ import annotations

import json

import pytest

from atoms.extract import SENSOR, ExtractionError, Source, extract
from atoms.extract.sensor import SensorExtractor
from atoms.tests.test_extract import assert_well_formed, children

SENSOR_CSV = (
    "timestamp,temperature,humidity,site\n"
    "2024-05-01T00:00:00Z,20.5,40,north\n"
    "2024-05-01T00:00:30Z,21.0,41,north\n"
    "2024-05-01T00:01:10Z,22.0,39,north\n"
)


def test_it_turns_sensor_rows_into_parts():
    parts = list(extract(Source.from_bytes(SENSOR_CSV.encode(), "s.csv")))
    assert_well_formed(parts)
    rows = children(parts, SENSOR)
    assert len(rows) == 3
    assert rows[0].metadata == {"timestamp": "2024-05-01T00:00:00+00:00",
                                "values": {"temperature": 20.5, "humidity": 40.0},
                                "labels": {"site": "north"}}
    assert rows[1].time_start - rows[0].time_start == 30
    assert json.loads(rows[0].content)["values"]["temperature"] == 20.5


def test_it_buckets_sensor_rows():
    src = Source.from_bytes(SENSOR_CSV.encode(), "s.csv")
    parts = list(extract(src, [SensorExtractor(bucket_seconds=60)]))
    buckets = children(parts, SENSOR)
    assert [b.metadata["rows"] for b in buckets] == [2, 1]
    assert buckets[0].metadata["fields"]["temperature"] == {
        "count": 2, "mean": 20.75, "min": 20.5, "max": 21.0}


def test_it_reads_json_lines_and_arrays_with_epoch_times():
    jsonl = b'{"ts": 1700000000000, "v": 1.5}\n{"ts": 1700000001000, "v": 2}\n'
    rows = children(list(extract(Source.from_bytes(jsonl, "s.jsonl"))), SENSOR)
    assert [r.time_start for r in rows] == [1_700_000_000.0, 1_700_000_001.0]
    arr = json.dumps([{"time": 1700000000, "v": 1}, {"time": 1700000005, "v": 2}]).encode()
    rows = children(list(extract(Source.from_bytes(arr, "s.json"))), SENSOR)
    assert [r.metadata["values"]["v"] for r in rows] == [1.0, 2.0]


def test_it_reports_bad_sensor_rows():
    bad_time = b"timestamp,v\nyesterday,1\n"
    with pytest.raises(ExtractionError) as err:
        list(extract(Source.from_bytes(bad_time, "s.csv")))
    assert err.value.code == "sensor.bad_timestamp"
    bad_json = b'{"ts": 1, "v": 1}\n{"ts": 2, \n'
    with pytest.raises(ExtractionError) as err:
        list(extract(Source.from_bytes(bad_json, "s.jsonl")))
    assert err.value.code == "sensor.corrupt"


