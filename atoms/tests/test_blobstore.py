"""Blob store: the filesystem backend and the S3 backend against a real local S3 server (moto)."""

from __future__ import annotations

import hashlib
import io
import os
import socket
import threading
import time
from pathlib import Path

import pytest

from atoms.blobstore import (
    BlobNotFound,
    BlobStoreError,
    DigestMismatch,
    FileSystemBlobStore,
    InvalidDigest,
    S3BlobStore,
    blob_key,
    blobstore_from_env,
)

ACCESS_KEY, SECRET_KEY = "testing", "testing"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3_endpoint():
    moto_server = pytest.importorskip("moto.server")
    port = _free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


_bucket_counter = iter(range(10**6))


@pytest.fixture(params=["fs", "s3"])
def store(request, tmp_path):
    if request.param == "fs":
        return FileSystemBlobStore(tmp_path / "blobs")
    endpoint = request.getfixturevalue("s3_endpoint")
    env = {
        "HARTONOMOUS_BLOB_BACKEND": "s3",
        "HARTONOMOUS_S3_BUCKET": f"blobs-{next(_bucket_counter)}",
        "HARTONOMOUS_S3_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
    }
    s3 = blobstore_from_env(env, tmp_path)
    assert isinstance(s3, S3BlobStore)
    s3.spool_dir = str(tmp_path)
    s3.ensure_bucket()
    return s3


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class OneShotReader(io.RawIOBase):
    """A non-seekable stream that yields ``total`` bytes of a pattern, a little at a time."""

    def __init__(self, total: int, piece: int = 100_003):
        self.left, self.piece, self.hasher, self.counter = total, piece, hashlib.sha256(), 0

    def readable(self):
        return True

    def readinto(self, buf):
        n = min(len(buf), self.left, self.piece)
        data = bytes([(self.counter + i) % 251 for i in range(min(n, 251))]) * (n // 251 + 1)
        data = data[:n]
        buf[:n] = data
        self.hasher.update(data)
        self.left -= n
        self.counter += n
        return n


def test_it_stores_and_reads_back(store):
    data = b"hello atoms\n" * 1000
    ref = store.put_bytes(data)
    assert ref.sha256 == sha(data) and ref.size == len(data) and ref.created
    assert store.exists(ref.sha256)
    assert store.size(ref.sha256) == len(data)
    assert store.read_bytes(ref.sha256) == data


def test_it_deduplicates(store):
    first = store.put_bytes(b"same bytes")
    second = store.put_stream(io.BytesIO(b"same bytes"))
    assert first.sha256 == second.sha256
    assert first.created and not second.created
    assert list(store.iter_digests()) == [first.sha256]


def test_it_stores_the_empty_blob(store):
    ref = store.put_bytes(b"")
    assert ref.sha256 == sha(b"") and ref.size == 0
    assert store.read_bytes(ref.sha256) == b""


def test_it_streams_a_large_non_seekable_input(store):
    src = OneShotReader(12 * 1024 * 1024 + 17)
    ref = store.put_stream(src)
    assert ref.sha256 == src.hasher.hexdigest()
    assert ref.size == 12 * 1024 * 1024 + 17


def test_it_serves_range_reads(store):
    data = os.urandom(3 * 1024 * 1024 + 5)
    ref = store.put_bytes(data)
    with store.open(ref.sha256) as f:
        assert f.seekable()
        f.seek(1_000_000)
        assert f.read(10) == data[1_000_000:1_000_010]
        f.seek(-5, io.SEEK_END)
        assert f.read() == data[-5:]
        f.seek(0)
        assert f.read(3) == data[:3]
        assert f.tell() == 3


def test_it_rejects_a_digest_mismatch_and_keeps_nothing(store):
    with pytest.raises(DigestMismatch) as err:
        store.put_bytes(b"actual", expected_sha256=sha(b"expected"))
    assert err.value.code == "blob.digest_mismatch"
    assert not store.exists(sha(b"actual"))
    assert list(store.iter_digests()) == []


def test_it_accepts_a_matching_expected_digest(store):
    ref = store.put_bytes(b"abc", expected_sha256=sha(b"abc").upper())
    assert ref.sha256 == sha(b"abc")


def test_it_reports_missing_blobs(store):
    missing = sha(b"nope")
    assert not store.exists(missing)
    with pytest.raises(BlobNotFound):
        store.open(missing)
    with pytest.raises(BlobNotFound):
        store.size(missing)
    assert store.delete(missing) is False


def test_it_rejects_malformed_digests(store):
    for bad in ["../../etc/passwd", "ABC", "g" * 64, sha(b"x")[:-1]]:
        with pytest.raises(InvalidDigest):
            store.exists(bad)


def test_it_deletes(store):
    ref = store.put_bytes(b"to delete")
    assert store.delete(ref.sha256) is True
    assert not store.exists(ref.sha256)


def test_it_collects_only_unreferenced_old_blobs(store):
    keep = store.put_bytes(b"keep").sha256
    drop = store.put_bytes(b"drop").sha256
    assert store.gc({keep}, min_age_seconds=3600) == []  # both too young
    time.sleep(1.1)
    assert store.gc({keep}, min_age_seconds=0) == [drop]
    assert store.exists(keep) and not store.exists(drop)


def test_it_lays_blobs_out_by_digest(tmp_path):
    store = FileSystemBlobStore(tmp_path)
    digest = store.put_bytes(b"layout").sha256
    assert blob_key(digest) == f"sha256/{digest[:2]}/{digest[2:4]}/{digest}"
    assert (tmp_path / "sha256" / digest[:2] / digest[2:4] / digest).read_bytes() == b"layout"
    assert list((tmp_path / "tmp").iterdir()) == []  # no temp file left behind


def test_it_keeps_no_temp_file_after_a_failed_write(tmp_path):
    class Broken(io.RawIOBase):
        def readable(self):
            return True

        def readinto(self, buf):
            raise OSError("disk on fire")

    store = FileSystemBlobStore(tmp_path)
    with pytest.raises(OSError):
        store.put_stream(Broken())
    assert list((tmp_path / "tmp").iterdir()) == []


def test_it_lets_concurrent_writers_of_the_same_content_agree(tmp_path):
    store = FileSystemBlobStore(tmp_path)
    data = os.urandom(2 * 1024 * 1024)
    results, barrier = [], threading.Barrier(8)

    def write():
        barrier.wait()
        results.append(store.put_bytes(data))

    threads = [threading.Thread(target=write) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert {r.sha256 for r in results} == {sha(data)}
    assert sum(r.created for r in results) == 1
    assert store.read_bytes(sha(data)) == data
    assert list((tmp_path / "tmp").iterdir()) == []


def test_it_refreshes_the_grace_period_when_content_is_put_again(store):
    digest = store.put_bytes(b"again").sha256
    time.sleep(2.2)
    store.put_bytes(b"again")
    assert store.gc(set(), min_age_seconds=2) == []
    time.sleep(2.2)
    assert store.gc(set(), min_age_seconds=2) == [digest]


def test_it_uploads_large_blobs_in_parts(s3_endpoint, tmp_path):
    store = S3BlobStore("multipart", endpoint_url=s3_endpoint, access_key_id=ACCESS_KEY,
                        secret_access_key=SECRET_KEY, multipart_threshold=5 * 1024 * 1024,
                        spool_dir=tmp_path)
    store.ensure_bucket()
    data = os.urandom(11 * 1024 * 1024)
    ref = store.put_bytes(data)
    head = store.client.head_object(Bucket="multipart", Key=store.key(ref.sha256))
    assert "-" in head["ETag"]  # multipart ETags end in -<part count>
    assert store.read_bytes(ref.sha256) == data


def test_it_builds_the_store_from_the_environment(tmp_path: Path):
    fs = blobstore_from_env({}, tmp_path)
    assert isinstance(fs, FileSystemBlobStore) and fs.root == tmp_path / "blobs"
    fs2 = blobstore_from_env({"HARTONOMOUS_BLOB_ROOT": str(tmp_path / "x")}, tmp_path)
    assert fs2.root == tmp_path / "x"
    with pytest.raises(BlobStoreError) as err:
        blobstore_from_env({"HARTONOMOUS_BLOB_BACKEND": "s3"}, tmp_path)
    assert err.value.code == "blob.misconfigured"
    with pytest.raises(BlobStoreError):
        blobstore_from_env({"HARTONOMOUS_BLOB_BACKEND": "ftp"}, tmp_path)


def test_it_stores_a_path_and_skips_the_write_for_a_duplicate(store, tmp_path):
    src = tmp_path / "input.bin"
    src.write_bytes(os.urandom(3 * 1024 * 1024 + 1))
    first = store.put_path(src)
    second = store.put_path(src)
    assert first.sha256 == second.sha256 == sha(src.read_bytes())
    assert first.created and not second.created and second.size == src.stat().st_size
    with pytest.raises(DigestMismatch):
        store.put_path(src, expected_sha256=sha(b"other"))
