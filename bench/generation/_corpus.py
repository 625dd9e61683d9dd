"""The awscli documentation corpus for the generation benches: real reStructuredText shipped in the
awscli wheel (`awscli/examples/<service>/*.rst`, `awscli/topics/*.rst`), cut into sections.

The wheel is fetched once with the ordinary client (`pip download --no-deps awscli`) into
$HARTONOMOUS_HOME/corpora and read from there afterwards. A file is cut at blank lines into paragraphs,
and consecutive paragraphs are packed into sections of at most `max_tokens` SmolLM2 tokens (a paragraph
longer than that is cut by tokens). Sections with the same text are kept once.
"""
from __future__ import annotations

import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

QUICK_SERVICES = ("s3", "s3api")
FULL_SERVICES = ("s3", "s3api", "iam", "sts", "kms", "s3control", "secretsmanager", "sqs", "sns")


@dataclass(frozen=True)
class Section:
    index: int        # position in the corpus list (also the kNN-LM group id)
    path: str         # file inside the wheel
    text: str
    ids: tuple[int, ...]


def wheel_path(home: Path) -> Path:
    corpora = home / "corpora"
    found = sorted(corpora.glob("awscli-*.whl"))
    if not found:
        corpora.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "awscli", "-d", str(corpora)],
                       check=True, stdout=subprocess.DEVNULL)
        found = sorted(corpora.glob("awscli-*.whl"))
    return found[-1]


def rst_files(wheel: Path, services: tuple[str, ...]) -> list[tuple[str, str]]:
    """(path, text) of the topics and of the examples of `services`, sorted by path."""
    out = []
    with zipfile.ZipFile(wheel) as z:
        for name in sorted(z.namelist()):
            parts = name.split("/")
            wanted = (name.startswith("awscli/topics/") or
                      (name.startswith("awscli/examples/") and len(parts) > 3 and parts[2] in services))
            if wanted and name.endswith(".rst"):
                out.append((name, z.read(name).decode("utf-8", errors="replace")))
    return out


def _pieces(tok, text: str, max_tokens: int) -> list[str]:
    """Paragraphs of `text`, each at most max_tokens tokens (longer ones cut by tokens)."""
    out = []
    for para in (p.strip("\n") for p in text.split("\n\n")):
        if not para.strip():
            continue
        ids = tok.encode(para)
        if len(ids) <= max_tokens:
            out.append(para)
        else:
            out += [tok.decode(ids[i:i + max_tokens]) for i in range(0, len(ids), max_tokens)]
    return out


def sections(tok, files: list[tuple[str, str]], max_tokens: int = 320) -> list[Section]:
    out, seen = [], set()
    for path, text in files:
        current = ""
        for para in _pieces(tok, text, max_tokens):
            joined = f"{current}\n\n{para}" if current else para
            if current and len(tok.encode(joined)) > max_tokens:
                _keep(out, seen, tok, path, current)
                joined = para
            current = joined
        _keep(out, seen, tok, path, current)
    return out


def _keep(out: list[Section], seen: set[str], tok, path: str, text: str) -> None:
    if text.strip() and text not in seen:
        seen.add(text)
        out.append(Section(len(out), path, text, tuple(tok.encode(text))))
