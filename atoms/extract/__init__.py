"""Ingestion plugins: turn a Source into a stream of Parts (no Django).

``extract(source)`` detects the modality, picks the first plugin whose ``able_to_run`` says
yes, and runs ``setup → run → cleanup``. Any failure to read the input is an
``ExtractionError`` with a stable ``code``; it may arrive after some parts were yielded, so a
consumer writes the parts of one source in one transaction.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from atoms.extract.audio import AudioExtractor
from atoms.extract.base import (
    AUDIO,
    BINARY,
    CODE,
    DOCUMENT,
    IMAGE,
    MODALITIES,
    MODEL,
    NEXT,
    PART_OF,
    ROOT,
    SENSOR,
    TEXT,
    VIDEO,
    VIDEO_FRAME,
    ExtractionError,
    Extractor,
    Part,
    Source,
    build_tree,
)
from atoms.extract.code import CodeExtractor
from atoms.extract.documents import HtmlExtractor, PdfExtractor
from atoms.extract.image import ImageExtractor
from atoms.extract.model import BinaryExtractor, ModelExtractor
from atoms.extract.sensor import SensorExtractor
from atoms.extract.sniff import sniff
from atoms.extract.text import TextExtractor
from atoms.extract.video import VideoExtractor


def default_extractors() -> list[Extractor]:
    return [ModelExtractor(), TextExtractor(), CodeExtractor(), PdfExtractor(), HtmlExtractor(),
            ImageExtractor(), AudioExtractor(), VideoExtractor(), SensorExtractor(),
            BinaryExtractor()]


def choose_extractor(source: Source, extractors: Sequence[Extractor] | None = None) -> Extractor:
    for extractor in extractors if extractors is not None else default_extractors():
        if extractor.able_to_run(source):
            return extractor
    raise ExtractionError("extract.unsupported", f"no extractor for {source.name} ({source.mime})")


def extract(source: Source, extractors: Sequence[Extractor] | None = None) -> Iterator[Part]:
    """Parts of ``source``: the root first, parents before children."""
    source.detect()
    extractor = choose_extractor(source, extractors)
    extractor.setup()
    try:
        yield from extractor.run(source)
    finally:
        extractor.cleanup()


__all__ = [
    "AUDIO", "BINARY", "CODE", "DOCUMENT", "IMAGE", "MODALITIES", "MODEL", "NEXT", "PART_OF",
    "ROOT", "SENSOR", "TEXT", "VIDEO", "VIDEO_FRAME", "AudioExtractor", "BinaryExtractor",
    "CodeExtractor", "ExtractionError", "Extractor", "HtmlExtractor", "ImageExtractor",
    "ModelExtractor", "Part", "PdfExtractor", "SensorExtractor", "Source", "TextExtractor",
    "VideoExtractor", "build_tree", "choose_extractor", "default_extractors", "extract", "sniff",
]
