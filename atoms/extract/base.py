"""The pieces every extractor shares: Source (what comes in), Part (what comes out), errors.

An extractor turns one Source into a flat, ordered stream of Parts. The first Part is the
root (the source itself, ``key == "root"``, no content: the caller already holds the bytes in
the blob store); every other Part names its parent by key and the relation to it (PART_OF),
and may name the previous sibling (``prev``) for a NEXT edge. A parent is always yielded
before its children, so a consumer can write rows as they arrive with constant memory.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

# modalities
TEXT, CODE, DOCUMENT, IMAGE, AUDIO = "text", "code", "document", "image", "audio"
VIDEO, VIDEO_FRAME, SENSOR, BINARY, MODEL = "video", "video_frame", "sensor", "binary", "model"
MODALITIES = (TEXT, CODE, DOCUMENT, IMAGE, AUDIO, VIDEO, VIDEO_FRAME, SENSOR, BINARY, MODEL)

# relations
PART_OF = "PART_OF"  # child -> parent
NEXT = "NEXT"  # previous sibling -> this part

ROOT = "root"


class ExtractionError(Exception):
    """Any failure to read a source; ``code`` is stable (``pdf.corrupt``, ``text.not_utf8`` ...)."""

    def __init__(self, code: str, message: str, **details: Any):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.details = details


@dataclass
class Source:
    """One input: a path or a binary stream, with a name (used for the extension)."""

    name: str
    path: Path | None = None
    stream: BinaryIO | None = None
    mime: str | None = None
    size: int | None = None
    modality: str | None = None  # filled by detect()

    def __post_init__(self) -> None:
        if self.path is None and self.stream is None:
            raise ValueError("a Source needs a path or a stream")
        if self.path is not None:
            self.path = Path(self.path)
            if self.size is None and self.path.exists():
                self.size = self.path.stat().st_size

    @classmethod
    def from_path(cls, path: Path | str, *, mime: str | None = None) -> Source:
        path = Path(path)
        return cls(name=path.name, path=path, mime=mime)

    @classmethod
    def from_bytes(cls, data: bytes, name: str, *, mime: str | None = None) -> Source:
        return cls(name=name, stream=io.BytesIO(data), mime=mime, size=len(data))

    @property
    def extension(self) -> str:
        return Path(self.name).suffix.lower()

    @contextlib.contextmanager
    def open(self) -> Iterator[BinaryIO]:
        """A binary file at offset 0 (the stream itself is rewound, never closed)."""
        if self.path is not None:
            try:
                f = open(self.path, "rb")
            except OSError as exc:
                raise ExtractionError("source.unreadable", str(exc)) from exc
            with f:
                yield f
            return
        if self.stream.seekable():
            self.stream.seek(0)
        yield self.stream

    def head(self, n: int = 8192) -> bytes:
        with self.open() as f:
            data = f.read(n)
        return data

    @contextlib.contextmanager
    def as_path(self) -> Iterator[Path]:
        """A filesystem path for tools that need one (ffmpeg, pypdf): spooled if a stream."""
        if self.path is not None:
            yield self.path
            return
        fd, name = tempfile.mkstemp(suffix=self.extension or ".bin", prefix="extract-")
        try:
            with os.fdopen(fd, "wb") as out, self.open() as f:
                shutil.copyfileobj(f, out, 1 << 20)
            yield Path(name)
        finally:
            os.unlink(name)

    def detect(self) -> str:
        if self.modality is None:
            from atoms.extract.sniff import sniff

            self.modality, mime = sniff(self)
            self.mime = self.mime or mime
        return self.modality


@dataclass
class Part:
    """One piece of a source, the future Atom.

    ``content`` holds the bytes to store (small things); ``path`` points at a file for big
    ones. ``embedding`` is a deterministic feature vector where the extractor makes one
    (images, frames, audio segments), named by ``metadata["embedding_kind"]``.
    """

    modality: str
    mime: str
    key: str = ROOT
    content: bytes | None = None
    path: Path | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    parent: str | None = None  # key of the parent part
    relation: str | None = None  # relation to the parent, PART_OF
    prev: str | None = None  # key of the previous sibling: an edge prev -NEXT-> self
    position: int | None = None  # order among siblings
    time_start: float | None = None  # seconds, for time-based media and sensors
    time_end: float | None = None
    embedding: np.ndarray | None = None
    thumbnail: bytes | None = None  # PNG, at most 128 px on each side
    children: list[Part] = field(default_factory=list)  # filled only by build_tree()

    def child(self, key: str, **kwargs: Any) -> Part:
        """A part whose parent is this one (relation PART_OF)."""
        kwargs.setdefault("modality", self.modality)
        kwargs.setdefault("mime", self.mime)
        return Part(key=key, parent=self.key, relation=PART_OF, **kwargs)

    @property
    def text(self) -> str:
        return (self.content or b"").decode("utf-8")

    def edges(self) -> list[tuple[str, str, str]]:
        """(source key, relation, target key) triples this part brings."""
        out = []
        if self.parent is not None:
            out.append((self.key, self.relation or PART_OF, self.parent))
        if self.prev is not None:
            out.append((self.prev, NEXT, self.key))
        return out


def build_tree(parts: Iterable[Part]) -> Part:
    """Collect a stream of parts into the root with nested ``children`` (small sources only)."""
    by_key: dict[str, Part] = {}
    root = None
    for part in parts:
        by_key[part.key] = part
        if part.parent is None:
            root = part
        else:
            by_key[part.parent].children.append(part)
    if root is None:
        raise ValueError("no root part")
    return root


class Extractor:
    """A plugin: ``able_to_run`` → ``setup`` → ``run`` (yields Parts) → ``cleanup``."""

    name = "base"
    modalities: tuple[str, ...] = ()

    def able_to_run(self, source: Source) -> bool:
        return source.detect() in self.modalities

    def setup(self) -> None:
        pass

    def run(self, source: Source) -> Iterator[Part]:
        raise NotImplementedError

    def cleanup(self) -> None:
        pass


def root_part(source: Source, **metadata: Any) -> Part:
    meta = {"name": source.name, "size": source.size}
    meta.update(metadata)
    return Part(modality=source.detect(), mime=source.mime or "application/octet-stream",
                path=source.path, metadata=meta)
