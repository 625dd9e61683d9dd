"""Concept discovery: speed beside scikit-learn, quality on real labelled data, cross-modal binding.

    .venv/bin/python bench/concepts/bench_discovery.py            # full run, writes docs/benchmarks_concepts.md
    .venv/bin/python bench/concepts/bench_discovery.py --quick    # 20K points, fewer media, writes nothing

1. Speed: 100K x 384 float32 (a Gaussian mixture, 12 centers, make_blobs) clustered by
   concepts.services.cluster_vectors (k by silhouette over 2..16 on a 4K sample, then Lloyd from the
   sample's centroids) and, at the k it chose, by native k-means, sklearn KMeans (n_init=1) and
   MiniBatchKMeans (n_init=1, batch 1024), all in this run; inertia beside each time.
2. Digits: scikit-learn's 1,797 8x8 digit images, upscaled to 64x64 PNGs, ingested through
   atoms.services.atom_ingest into the bench database `bench_concepts`; concepts_discover clusters
   their image-hist-dct-256-v1 embeddings; NMI of concept membership vs the true digit.
3. Spoken digits: espeak-ng, several voices x speeds, each a WAV ingested the same way; NMI of the
   audio segments' concepts vs the digit said.
4. Cross-modal: a video (ffmpeg) where each digit image is shown for 5 s while its name is spoken,
   several passes in several voices; ingested like any video; discovery + binding; share of the
   image-concept <-> audio-concept edges that join the same digit (majority digit of each side).
"""
from __future__ import annotations

import argparse
import io
import json
import platform
import subprocess
import sys
import tempfile
import time
import wave
from collections import Counter
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench" / "atoms"))

import _setup  # noqa: E402  (the atoms benches' database set-up, reused with our own database)

BENCH_DB = "bench_concepts"
WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
VOICES = ["en-us", "en-gb", "en-gb-scotland", "en+f3", "en-us+m3"]
SPEEDS = [130, 175, 220]


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in subprocess.run(
        ["lscpu"], capture_output=True, text=True).stdout.splitlines() if line.startswith("Model name")), "?")
    import os

    return f"{model}, {os.cpu_count()} vCPU, Python {platform.python_version()}"


# ----------------------------------------------------------------------------- 1. speed


def bench_speed(n: int) -> dict:
    from sklearn.cluster import KMeans, MiniBatchKMeans
    from sklearn.datasets import make_blobs

    import native
    from concepts.services import DiscoveryConfig, cluster_vectors

    x, _ = make_blobs(n_samples=n, n_features=384, centers=12, cluster_std=3.0, center_box=(-3, 3), random_state=0)
    x = x.astype(np.float32)
    out = {"n": n}
    t = time.perf_counter()
    fit = cluster_vectors(x, DiscoveryConfig(k_max=16))
    out["ours_full"] = time.perf_counter() - t
    k = len(fit.centroids)
    out["k"], out["silhouette"] = k, fit.silhouette
    out["ours_full_inertia"] = float((fit.distances ** 2).sum())
    for name, fn in [
        ("native_lloyd", lambda: native.kmeans(x, k, seed=0, max_iter=100)),
        ("native_minibatch", lambda: native.kmeans(x, k, seed=0, max_iter=100, method="minibatch")),
        ("sklearn_kmeans", lambda: KMeans(k, n_init=1, random_state=0, max_iter=100).fit(x)),
        ("sklearn_minibatch", lambda: MiniBatchKMeans(k, n_init=1, random_state=0, batch_size=1024).fit(x)),
    ]:
        t = time.perf_counter()
        r = fn()
        out[name] = time.perf_counter() - t
        out[name + "_inertia"] = float(r.inertia if hasattr(r, "inertia") else r.inertia_)
    print(json.dumps(out, indent=1), flush=True)
    return out


# ----------------------------------------------------------------------------- media helpers


def digit_png(image: np.ndarray, side: int = 64, noise_seed: int | None = None) -> bytes:
    from PIL import Image

    img = Image.fromarray((image / 16 * 255).astype(np.uint8)).resize((side, side), Image.NEAREST).convert("RGB")
    if noise_seed is not None:
        a = np.asarray(img, np.float32) + np.random.default_rng(noise_seed).normal(0, 6, (side, side, 1))
        img = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def speak(word: str, voice: str, speed: int, path: Path) -> None:
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(path), word], check=True,
                   capture_output=True)


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path)) as w:
        data = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
        return data, w.getframerate()


def nmi(truth, labels) -> float:
    from sklearn.metrics import normalized_mutual_info_score

    return float(normalized_mutual_info_score(truth, labels))


def membership(atom_ids: list[int]) -> dict[int, int]:
    from atoms.models import AtomRelation

    return dict(AtomRelation.objects.filter(relation="MEMBER_OF", source_id__in=atom_ids)
                .values_list("source_id", "target_id"))


# ----------------------------------------------------------------------------- 2 + 3. digits, spoken digits


def bench_digits(tenant, limit: int | None) -> dict:
    from sklearn.datasets import load_digits

    from atoms.extract import Source
    from atoms.services import atom_ingest
    from concepts.services import DiscoveryConfig, concepts_discover

    d = load_digits()
    n = len(d.images) if limit is None else limit
    t = time.perf_counter()
    ids, truth = [], []
    for i in range(n):
        r = atom_ingest(tenant=tenant, source=Source.from_bytes(digit_png(d.images[i]), f"digit-{d.target[i]}-{i}.png"),
                        source_kind="file")
        ids.append(r.root.pk)
        truth.append(int(d.target[i]))
    ingest_s = time.perf_counter() - t
    t = time.perf_counter()
    run = concepts_discover(tenant=tenant, config=DiscoveryConfig(models=["image-hist-dct-256-v1"]))
    discover_s = time.perf_counter() - t
    member = membership(ids)
    out = {"images": n, "ingest_s": ingest_s, "discover_s": discover_s,
           "k": run.outcome["image-hist-dct-256-v1"]["k"], "silhouette": run.silhouette,
           "nmi": nmi(truth, [member.get(a, -1) for a in ids])}
    print("digits", json.dumps(out), flush=True)
    return out


def bench_spoken(tenant, voices: list[str], speeds: list[int]) -> dict:
    from atoms.extract import Source
    from atoms.models import AtomRelation
    from atoms.services import atom_ingest
    from concepts.services import DiscoveryConfig, concepts_discover

    tmp = Path(tempfile.mkdtemp(prefix="bench_spoken_"))
    roots: dict[int, int] = {}
    for voice in voices:
        for speed in speeds:
            for digit, word in enumerate(WORDS):
                path = tmp / f"spoken-{digit}-{voice}-{speed}.wav"
                speak(word, voice, speed, path)
                r = atom_ingest(tenant=tenant, source=Source.from_bytes(path.read_bytes(), path.name), source_kind="file")
                roots[r.root.pk] = digit
    segments = dict(AtomRelation.objects.filter(relation="PART_OF", target_id__in=list(roots),
                                                source__modality="audio").values_list("source_id", "target_id"))
    audio_ids = list(segments) or list(roots)
    digit_of = {a: roots[segments[a]] if a in segments else roots[a] for a in audio_ids}
    t = time.perf_counter()
    run = concepts_discover(tenant=tenant, config=DiscoveryConfig(models=["audio-logmel-stats-256-v1"]))
    discover_s = time.perf_counter() - t
    member = membership(audio_ids)
    embedded = [a for a in audio_ids if a in member]
    out = {"clips": len(roots), "segments": len(audio_ids), "clustered": len(embedded), "voices": voices,
           "speeds": speeds, "discover_s": discover_s,
           "k": run.outcome.get("audio-logmel-stats-256-v1", {}).get("k"),
           "nmi": nmi([digit_of[a] for a in embedded], [member[a] for a in embedded]) if embedded else None}
    print("spoken", json.dumps(out), flush=True)
    return out


# ----------------------------------------------------------------------------- 4. cross-modal video


def build_video(path: Path, voices: list[str], slot: float = 5.0, seed: int = 0, frames: str = "noise") -> list[int]:
    """A video of len(voices) passes over the digits 0-9 (shuffled per pass): slot seconds per digit,
    the digit on screen and its name spoken (four times) through the slot. -> the digit of each slot.

    frames="noise": the digit's one image each second with its own sensor noise (camera footage never
    repeats a frame bit for bit); frames="samples": another handwritten sample of the digit each second."""
    from sklearn.datasets import load_digits

    d = load_digits()
    by_digit = {k: np.flatnonzero(d.target == k) for k in range(10)}
    rng = np.random.default_rng(seed)
    tmp = Path(tempfile.mkdtemp(prefix="bench_video_"))
    order: list[int] = []
    audio, sr = [], 22050
    for voice in voices:
        for digit in rng.permutation(10):
            digit = int(digit)
            for second in range(int(slot)):
                n = len(order) * int(slot) + second
                png = (digit_png(d.images[by_digit[digit][0]], side=128, noise_seed=n) if frames == "noise" else
                       digit_png(d.images[by_digit[digit][n % len(by_digit[digit])]], side=128))
                (tmp / f"frame{n:05d}.png").write_bytes(png)
            wav = tmp / "w.wav"
            speak(". ".join([WORDS[digit]] * 4), voice, 160, wav)  # the name said through the slot
            samples, sr = read_wav(wav)
            pad = np.zeros(int(slot * sr), np.int16)
            pad[:min(len(samples), len(pad))] = samples[:len(pad)]
            audio.append(pad)
            order.append(digit)
    with wave.open(str(tmp / "audio.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes(np.concatenate(audio).tobytes())
    subprocess.run(["ffmpeg", "-y", "-loglevel", "error", "-framerate", "1", "-i", str(tmp / "frame%05d.png"),
                    "-i", str(tmp / "audio.wav"), "-c:v", "libx264", "-r", "5", "-pix_fmt", "yuv420p",
                    "-c:a", "aac", "-shortest", str(path)], check=True)
    return order


def bench_crossmodal(tenant, voices: list[str], frames: str = "noise") -> dict:
    from atoms.extract import Source
    from atoms.models import Atom, AtomRelation
    from atoms.services import atom_ingest
    from concepts.binding import concepts_bind
    from concepts.models import Concept
    from concepts.services import concepts_discover

    path = Path(tempfile.mkdtemp(prefix="bench_xm_")) / "digits.mp4"
    order = build_video(path, voices, frames=frames)
    t = time.perf_counter()
    root = atom_ingest(tenant=tenant, source=Source.from_bytes(path.read_bytes(), path.name), source_kind="file").root
    ingest_s = time.perf_counter() - t
    parts = list(Atom.objects.filter(relations_out__target=root, relations_out__relation="PART_OF",
                                     modality__in=["video_frame", "audio"]).values_list("id", "modality", "time_start"))
    digit = {a: order[min(int(ts // 5.0), len(order) - 1)] for a, _, ts in parts if ts is not None}
    run = concepts_discover(tenant=tenant)
    bound = concepts_bind(tenant=tenant)
    member = membership([a for a, _, _ in parts])
    majority: dict[int, int] = {}
    for concept_atom in set(member.values()):
        votes = Counter(digit[a] for a, c in member.items() if c == concept_atom and a in digit)
        if votes:
            majority[concept_atom] = votes.most_common(1)[0][0]
    modality = dict(Concept.objects.values_list("atom_id", "modality"))
    edges = [e for e in AtomRelation.objects.filter(relation__in=["RELATED_TO", "IS_A"], metadata__binding=True)
             if {modality.get(e.source_id), modality.get(e.target_id)} == {"video_frame", "audio"}]
    same = sum(1 for e in edges if majority.get(e.source_id) is not None
               and majority.get(e.source_id) == majority.get(e.target_id))
    out = {"slots": len(order), "frames": sum(1 for _, m, _ in parts if m == "video_frame"),
           "audio_segments": sum(1 for _, m, _ in parts if m == "audio"), "ingest_s": ingest_s,
           "k": {m: o.get("k") for m, o in run.outcome.items() if isinstance(o, dict)},
           "contexts": bound.contexts, "edges": bound.edges, "image_audio_edges": len(edges), "same_digit": same,
           "share": same / len(edges) if edges else None}
    print("crossmodal", json.dumps(out), flush=True)
    return out


# ----------------------------------------------------------------------------- report


def render(speed: dict, digits: dict | None, spoken: dict | None, xm: dict | None, mach: str) -> str:
    s = speed
    lines = ["# Benchmarks: concepts (discovery, quality, binding)", "",
             f"Machine: {mach}. Command: `.venv/bin/python bench/concepts/bench_discovery.py`.", "",
             f"## Discovery speed, {s['n']:,} x 384 float32 (Gaussian mixture, 12 centers), same run", "",
             "| method | time (s) | inertia | time vs MiniBatchKMeans | inertia vs MiniBatchKMeans |",
             "| --- | ---: | ---: | ---: | ---: |"]
    base_t, base_i = s["sklearn_minibatch"], s["sklearn_minibatch_inertia"]
    for name, label in [("ours_full", f"concepts discovery (k by silhouette 2..16 -> k={s['k']}, then Lloyd)"),
                        ("native_lloyd", f"native.kmeans lloyd, k={s['k']}"),
                        ("native_minibatch", f"native.kmeans minibatch, k={s['k']}"),
                        ("sklearn_kmeans", f"sklearn KMeans n_init=1, k={s['k']}"),
                        ("sklearn_minibatch", f"sklearn MiniBatchKMeans n_init=1, k={s['k']}")]:
        lines.append(f"| {label} | {s[name]:.2f} | {s[name + '_inertia']:.4g} | {s[name] / base_t:.2f}x | "
                     f"{s[name + '_inertia'] / base_i:.4f} |")
    lines += ["", f"Seed target: < 5 minutes for discovery on 100K x 384: {s['ours_full']:.1f} s "
                  f"({'met' if s['ours_full'] < 300 else 'NOT met'}).", ""]
    if digits:
        lines += ["## Quality: scikit-learn digits (images through atom_ingest)", "",
                  f"{digits['images']} images -> k={digits['k']} (silhouette {digits['silhouette']:.3f}); "
                  f"**NMI {digits['nmi']:.3f}** (target >= 0.7). Ingest {digits['ingest_s']:.1f} s, "
                  f"discovery {digits['discover_s']:.1f} s.", ""]
    if spoken:
        lines += ["## Quality: spoken digits (espeak-ng)", "",
                  f"{spoken['clips']} clips ({len(spoken['voices'])} voices x {len(spoken['speeds'])} speeds x 10 "
                  f"digits), {spoken['clustered']} audio segments clustered -> k={spoken['k']}; "
                  f"**NMI {spoken['nmi']:.3f}** (reported, no target).", ""]
    if xm:
        lines += ["## Cross-modal binding (ffmpeg video: the digit shown while its name is spoken)", ""]
        for frames, label in (("noise", "one image per digit, per-frame sensor noise"),
                              ("samples", "a different handwritten sample each second")):
            x = xm.get(frames)
            if not x:
                continue
            share = "n/a" if x["share"] is None else f"{x['share']:.0%}"
            lines += [f"- {label}: {x['slots']} slots of 5 s, {x['frames']} frame atoms, {x['audio_segments']} audio "
                      f"segments; k per model {x['k']}; {x['contexts']} time-bucket contexts, {x['edges']} binding "
                      f"edges, {x['image_audio_edges']} image<->audio, {x['same_digit']} join the same digit: "
                      f"**{share}** (aim >= 90%)."]
        lines.append("")
    lines += ["## Notes", "",
              "- All figures of one table come from the same run on a shared 2-vCPU machine (other work was running:",
              "  absolute times are noisy, ratios within a run are the figure to read).",
              "- Discovery speed: k is chosen on a 4,000-point sample (silhouette on 1,000 points, k = 2..16), then",
              "  Lloyd runs on all points from the sample's centroids, so it converges in few passes; peers run at the",
              "  k it chose with n_init=1. Loading embeddings from PostgreSQL is not in this figure.",
              "- Digits: features are the atom store's image-hist-dct-256-v1 embedding (no learned model); sklearn",
              "  KMeans(k=10) on the same embedding gives NMI ~0.74 and on raw pixels ~0.74 (checked by hand).",
              "- Cross-modal: the name is said four times through each 5 s slot. With ONE utterance per slot",
              "  (~0.6 s of speech, 4.4 s of silence) the audio segments cluster by voice (silhouette picks k=2)",
              "  and only 1 of 3 image<->audio edges joined the same digit (33%): the audio embedding of a",
              "  mostly silent 5 s segment does not carry the word. Bit-identical frames (a static screen) are one",
              "  atom whose PART_OF edge lists every time it is on screen, and binding counts each of those times;",
              "  but ten distinct images are ten points, which no silhouette over k < n splits into ten concepts.",
              "  The handwritten-samples video adds the image clustering error (digits NMI above) to the binding.",
              ""]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", choices=["speed", "digits", "spoken", "video"], action="append",
                    help="run only these parts (repeatable); the report is not written")
    args = ap.parse_args()
    mach = machine()
    n = 20_000 if args.quick else 100_000
    env = _setup.bench_env(BENCH_DB)
    _setup.prepare(env)
    tenant = _setup.django_init(env)
    parts = set(args.only or ["speed", "digits", "spoken", "video"])
    speed = bench_speed(n) if "speed" in parts else None
    digits = spoken = xm = None
    if "digits" in parts:
        digits = bench_digits(tenant, 300 if args.quick else None)
    if "spoken" in parts:
        spoken = bench_spoken(tenant, VOICES[:2] if args.quick else VOICES, SPEEDS[:2] if args.quick else SPEEDS)
    if "video" in parts:
        from django.db import connection

        from hartonomous.onboarding import tenant_ensure

        xm = {}
        for frames in ("noise", "samples"):
            connection.set_schema_to_public()
            video_tenant = tenant_ensure(slug=f"benchvideo{frames}", name=f"Bench video {frames}", credits=1e9)
            connection.set_tenant(video_tenant)
            xm[frames] = bench_crossmodal(video_tenant, VOICES[:2] if args.quick else VOICES[:4], frames)
    _setup.flush_redis(env)
    if args.only:
        return 0
    report = render(speed, digits, spoken, xm, mach)
    print(report)
    if not args.quick:
        (REPO / "docs" / "benchmarks_concepts.md").write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
