"""Blob ingest throughput: FileSystemBlobStore.put_stream vs `sha256sum` on the same files.

Generates ~1 GB of random files (default 64 × 16 MiB) in a temp dir (page-cache warm for both
sides), then times `sha256sum` reading and hashing them, and our store ingesting them (read +
hash + write + fsync + atomic link). Prints GB/s for each and the ratio, in one run.

    .venv/bin/python bench/atoms/bench_blob.py [--files 64] [--mib 16] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def make_files(folder: Path, count: int, mib: int) -> list[Path]:
    paths = []
    for i in range(count):
        path = folder / f"input-{i:04d}.bin"
        with open(path, "wb") as f:
            for _ in range(mib):
                f.write(os.urandom(1 << 20))
        paths.append(path)
    return paths


def time_sha256sum(paths: list[Path]) -> tuple[float, dict[str, str]]:
    t0 = time.perf_counter()
    out = subprocess.run(["sha256sum", *map(str, paths)], check=True, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    digests = {line.split()[1]: line.split()[0] for line in out.stdout.splitlines()}
    return elapsed, digests


def time_hashlib(paths: list[Path]) -> float:
    """Read + hash in Python (OpenSSL SHA-256), no write: the store's floor."""
    import hashlib

    t0 = time.perf_counter()
    buf = bytearray(1 << 20)
    for path in paths:
        h = hashlib.sha256()
        with open(path, "rb", buffering=0) as f:
            while n := f.readinto(buf):
                h.update(memoryview(buf)[:n])
    return time.perf_counter() - t0


def time_store(store, paths: list[Path]) -> tuple[float, dict[str, str]]:
    digests = {}
    t0 = time.perf_counter()
    for path in paths:
        with open(path, "rb") as f:
            digests[str(path)] = store.put_stream(f).sha256
    return time.perf_counter() - t0, digests


def time_store_paths(store, paths: list[Path]) -> float:
    t0 = time.perf_counter()
    for path in paths:
        store.put_path(path)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=64)
    ap.add_argument("--mib", type=int, default=16)
    ap.add_argument("--dir", default=None)
    args = ap.parse_args()
    sys.path.insert(0, str(REPO))
    from atoms.blobstore import FileSystemBlobStore

    with tempfile.TemporaryDirectory(dir=args.dir, prefix="bench-blob-") as tmp:
        tmp = Path(tmp)
        (tmp / "in").mkdir()
        paths = make_files(tmp / "in", args.files, args.mib)
        total = sum(p.stat().st_size for p in paths)
        time_sha256sum(paths[:2])  # warm up
        peer_s, peer_digests = time_sha256sum(paths)
        hashlib_s = time_hashlib(paths)
        ours_s, our_digests = time_store(FileSystemBlobStore(tmp / "store"), paths)
        assert peer_digests == our_digests, "digests differ"
        again_s, _ = time_store(FileSystemBlobStore(tmp / "store"), paths)  # all duplicates
        dup_path_s = time_store_paths(FileSystemBlobStore(tmp / "store"), paths)
        gb = total / 1e9
        print(f"files={args.files} x {args.mib} MiB = {gb:.2f} GB")
        print(f"sha256sum (read + hash):                     {gb / peer_s:6.2f} GB/s")
        print(f"Python hashlib (read + hash, no write):      {gb / hashlib_s:6.2f} GB/s")
        print(f"FileSystemBlobStore.put_stream (new blobs):  {gb / ours_s:6.2f} GB/s "
              f"({peer_s / ours_s:.2f}x sha256sum)")
        print(f"FileSystemBlobStore.put_stream (duplicates): {gb / again_s:6.2f} GB/s "
              f"({peer_s / again_s:.2f}x sha256sum)")
        print(f"FileSystemBlobStore.put_path (duplicates):   {gb / dup_path_s:6.2f} GB/s "
              f"({peer_s / dup_path_s:.2f}x sha256sum)")
        print("load average (1, 5, 15 min): {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))


if __name__ == "__main__":
    main()
