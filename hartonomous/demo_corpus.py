"""The demo's sample corpus: real files of every modality, made on this machine once.

Text and code come from this project's own docs and sources; images are drawn with Pillow; speech
is synthesised by espeak-ng; the video (ffmpeg) shows coloured frames while a voice speaks. Media
that needs a missing tool is skipped with a note, never faked.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parent.parent
SENTENCES = [
    "Every atom is addressed by the SHA-256 of its bytes.",
    "Hybrid search fuses vector, full text and trigram hits.",
    "The provenance graph records which atoms each token drew on.",
]
COLOURS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 80, 220), "yellow": (230, 210, 40)}


def _text_and_code(target: Path) -> None:
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        shutil.copy(path, target / path.name)
    for path in ("atoms/search.py", "atoms/services.py", "tenants/ratelimit.py", "billing/services.py"):
        shutil.copy(ROOT / path, target / path.replace("/", "_"))


def _images(target: Path) -> None:
    for name, colour in COLOURS.items():
        image = Image.new("RGB", (160, 120), (250, 250, 250))
        draw = ImageDraw.Draw(image)
        draw.ellipse((30, 20, 130, 100), fill=colour)
        draw.text((8, 4), name, fill=(0, 0, 0))
        image.save(target / f"{name}_circle.png")


def _speech(target: Path) -> list[Path]:
    if not shutil.which("espeak-ng"):
        return []
    made = []
    for i, sentence in enumerate(SENTENCES):
        out = target / f"speech_{i}.wav"
        subprocess.run(["espeak-ng", "-w", str(out), sentence], check=True, capture_output=True)
        made.append(out)
    return made


def _video(target: Path, speech: list[Path]) -> None:
    if not shutil.which("ffmpeg") or not speech:
        return
    frames = [target / f"{name}_circle.png" for name in COLOURS]
    listing = target / "frames.txt"
    listing.write_text("".join(f"file '{f}'\nduration 1\n" for f in frames) + f"file '{frames[-1]}'\n")
    subprocess.run(
        ["ffmpeg", "-y", "-loglevel", "error", "-f", "concat", "-safe", "0", "-i", str(listing), "-i", str(speech[0]),
         "-vf", "fps=2,format=yuv420p", "-c:v", "libx264", "-c:a", "aac", "-shortest", str(target / "circles.mp4")],
        check=True, capture_output=True,
    )
    listing.unlink()


def _sensor(target: Path) -> None:
    rows = ["timestamp,temperature,humidity"]
    rows += [f"2026-11-25T10:{m:02d}:00Z,{20 + m * 0.1:.1f},{40 + (m % 7)}" for m in range(60)]
    (target / "greenhouse.csv").write_text("\n".join(rows) + "\n")


def build(home: Path) -> Path:
    """Create the corpus under home/demo_corpus (once) and return the folder."""
    target = home / "demo_corpus"
    if (target / ".complete").exists():
        return target
    target.mkdir(parents=True, exist_ok=True)
    _text_and_code(target)
    _images(target)
    _video(target, _speech(target))
    _sensor(target)
    (target / ".complete").write_text("ok\n")
    return target
