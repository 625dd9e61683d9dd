"""Modality and MIME detection: magic bytes first, then the extension, then a text check."""

from __future__ import annotations

import json
import struct

from atoms.extract.base import (
    AUDIO,
    BINARY,
    CODE,
    DOCUMENT,
    IMAGE,
    MODEL,
    SENSOR,
    TEXT,
    VIDEO,
    Source,
)

CODE_EXTENSIONS = {
    ".py": "text/x-python", ".pyi": "text/x-python", ".js": "text/javascript",
    ".mjs": "text/javascript", ".ts": "text/x-typescript", ".tsx": "text/x-typescript",
    ".jsx": "text/javascript", ".go": "text/x-go", ".rs": "text/x-rust", ".c": "text/x-c",
    ".h": "text/x-c", ".cc": "text/x-c++", ".cpp": "text/x-c++", ".hpp": "text/x-c++",
    ".java": "text/x-java", ".kt": "text/x-kotlin", ".rb": "text/x-ruby", ".php": "text/x-php",
    ".cs": "text/x-csharp", ".swift": "text/x-swift", ".scala": "text/x-scala",
    ".sh": "text/x-shellscript", ".bash": "text/x-shellscript", ".sql": "text/x-sql",
    ".lua": "text/x-lua", ".r": "text/x-r", ".pl": "text/x-perl",
}
TEXT_EXTENSIONS = {
    ".txt": "text/plain", ".md": "text/markdown", ".markdown": "text/markdown",
    ".rst": "text/x-rst", ".log": "text/plain", ".text": "text/plain",
}
SENSOR_EXTENSIONS = {".csv": "text/csv", ".tsv": "text/tab-separated-values",
                     ".json": "application/json", ".jsonl": "application/x-ndjson",
                     ".ndjson": "application/x-ndjson"}
TIME_FIELDS = ("timestamp", "time", "ts", "datetime", "date", "t", "time_s", "epoch")

_MAGIC = [
    (b"\x89PNG\r\n\x1a\n", IMAGE, "image/png"),
    (b"\xff\xd8\xff", IMAGE, "image/jpeg"),
    (b"GIF87a", IMAGE, "image/gif"),
    (b"GIF89a", IMAGE, "image/gif"),
    (b"BM", IMAGE, "image/bmp"),
    (b"II*\x00", IMAGE, "image/tiff"),
    (b"MM\x00*", IMAGE, "image/tiff"),
    (b"%PDF-", DOCUMENT, "application/pdf"),
    (b"fLaC", AUDIO, "audio/flac"),
    (b"ID3", AUDIO, "audio/mpeg"),
    (b"OggS", AUDIO, "audio/ogg"),
    (b"\x1a\x45\xdf\xa3", VIDEO, "video/webm"),
    (b"GGUF", MODEL, "application/x-gguf"),
]


def _riff(head: bytes) -> tuple[str, str] | None:
    if head[:4] != b"RIFF":
        return None
    kind = head[8:12]
    return {b"WAVE": (AUDIO, "audio/wav"), b"WEBP": (IMAGE, "image/webp"),
            b"AVI ": (VIDEO, "video/x-msvideo")}.get(kind)


def _iso_bmff(head: bytes) -> tuple[str, str] | None:
    if head[4:8] != b"ftyp":
        return None
    brand = head[8:12]
    if brand in (b"M4A ", b"M4B "):
        return AUDIO, "audio/mp4"
    if brand.startswith(b"qt"):
        return VIDEO, "video/quicktime"
    return VIDEO, "video/mp4"


def is_safetensors(head: bytes) -> bool:
    """8-byte little-endian header length, then a JSON object."""
    if len(head) < 10:
        return False
    (n,) = struct.unpack("<Q", head[:8])
    return 2 <= n < 100_000_000 and head[8:9] == b"{"


def _is_mp3_frame(head: bytes) -> bool:
    return len(head) > 2 and head[0] == 0xFF and (head[1] & 0xE0) == 0xE0 and (head[1] & 0x06) != 0


def _looks_textual(head: bytes) -> bool:
    if b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start >= len(head) - 3  # a character cut by the head boundary
    return True


def _has_time_field(source: Source, head: bytes) -> bool:
    text = head.decode("utf-8", errors="replace")
    if source.extension in (".csv", ".tsv"):
        first = text.splitlines()[0] if text else ""
        sep = "\t" if source.extension == ".tsv" else ","
        cols = [c.strip().strip('"').lower() for c in first.split(sep)]
        return any(c in TIME_FIELDS for c in cols)
    line = text.lstrip().lstrip("[").lstrip()
    first = line.split("\n", 1)[0].rstrip().rstrip(",")
    try:
        obj = json.loads(first)
    except ValueError:
        return '"timestamp"' in text or '"time"' in text or '"ts"' in text
    return isinstance(obj, dict) and any(k.lower() in TIME_FIELDS for k in obj)


def sniff(source: Source) -> tuple[str, str]:
    """(modality, mime) of a source."""
    head = source.head(8192)
    ext = source.extension
    for magic, modality, mime in _MAGIC:
        if head.startswith(magic):
            return modality, mime
    for probe in (_riff, _iso_bmff):
        found = probe(head)
        if found:
            return found
    if _is_mp3_frame(head):
        return AUDIO, "audio/mpeg"
    if ext == ".safetensors" or is_safetensors(head) and not _looks_textual(head[:8]):
        return MODEL, "application/x-safetensors"
    if ext in (".html", ".htm", ".xhtml") or head.lstrip()[:15].lower().startswith(
        (b"<!doctype html", b"<html")
    ):
        return DOCUMENT, "text/html"
    if ext in SENSOR_EXTENSIONS and _looks_textual(head) and _has_time_field(source, head):
        return SENSOR, SENSOR_EXTENSIONS[ext]
    if ext in CODE_EXTENSIONS:
        return CODE, CODE_EXTENSIONS[ext]
    if ext in TEXT_EXTENSIONS or ext in SENSOR_EXTENSIONS:
        return TEXT, TEXT_EXTENSIONS.get(ext) or SENSOR_EXTENSIONS[ext]
    if head.startswith(b"#!") and _looks_textual(head):
        return CODE, "text/x-script"
    if _looks_textual(head):
        return TEXT, "text/plain"
    return BINARY, "application/octet-stream"
