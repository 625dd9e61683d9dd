"""Content-addressed blob store (no Django).

Every blob is stored under the hex SHA-256 of its bytes, at ``sha256/ab/cd/<digest>``
(``ab`` and ``cd`` are the first two byte pairs of the digest). Writes stream: the input is
read in 1 MiB chunks, hashed while it is written to a temporary file, and only then moved
into place, so memory stays constant whatever the size and a reader never sees half a blob.

Reference counting lives in the database; :meth:`BlobStore.gc` only deletes what the caller
says is unreferenced and older than a grace period (so a blob whose row is not yet committed
survives).
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

CHUNK_SIZE = 1 << 20
DEFAULT_GC_GRACE_SECONDS = 3600.0
_DIGEST_RE = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class BlobRef:
    sha256: str
    size: int
    created: bool


@dataclass(frozen=True)
class BlobInfo:
    sha256: str
    size: int
    modified: float  # seconds since the epoch


class BlobStoreError(Exception):
    """Base error; ``code`` is a stable machine-readable string."""

    code = "blob.error"

    def __init__(self, message: str, *, code: str | None = None):
        super().__init__(message)
        self.message = message
        if code:
            self.code = code


class BlobNotFound(BlobStoreError, KeyError):
    code = "blob.not_found"

    def __str__(self) -> str:
        return self.message


class DigestMismatch(BlobStoreError):
    code = "blob.digest_mismatch"


class InvalidDigest(BlobStoreError, ValueError):
    code = "blob.invalid_digest"


def validate_digest(sha256: str) -> str:
    if not isinstance(sha256, str) or not _DIGEST_RE.match(sha256):
        raise InvalidDigest(f"not a lowercase hex SHA-256 digest: {sha256!r}")
    return sha256


def blob_key(sha256: str) -> str:
    """Relative location of a blob: ``sha256/ab/cd/<digest>``."""
    validate_digest(sha256)
    return f"sha256/{sha256[0:2]}/{sha256[2:4]}/{sha256}"


def _copy_hashing(src: BinaryIO, dst: BinaryIO) -> tuple[str, int]:
    """Copy ``src`` to ``dst`` in 1 MiB chunks; return (sha256 hex, size)."""
    digest = hashlib.sha256()
    size = 0
    buf = bytearray(CHUNK_SIZE)
    view = memoryview(buf)
    readinto = getattr(src, "readinto", None)
    while True:
        if readinto is not None:
            n = readinto(view)
            if not n:
                break
            chunk = view[:n]
        else:
            data = src.read(CHUNK_SIZE)
            if not data:
                break
            chunk, n = data, len(data)
        digest.update(chunk)
        dst.write(chunk)
        size += n
    return digest.hexdigest(), size


def _hash_file(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    buf = bytearray(CHUNK_SIZE)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(view):
            digest.update(view[:n])
            size += n
    return digest.hexdigest(), size


def _check_expected(actual: str, expected: str | None) -> None:
    if expected is not None and actual != expected.lower():
        raise DigestMismatch(f"content hashes to {actual}, expected {expected}")


class BlobStore(ABC):
    """What every backend offers. Digests are lowercase hex SHA-256 strings."""

    @abstractmethod
    def put_stream(self, fileobj: BinaryIO, *, expected_sha256: str | None = None) -> BlobRef:
        """Store the bytes read from ``fileobj``; ``created`` is False when already present."""

    @abstractmethod
    def open(self, sha256: str) -> BinaryIO:
        """A seekable binary file over the blob (close it when done)."""

    @abstractmethod
    def exists(self, sha256: str) -> bool: ...

    @abstractmethod
    def size(self, sha256: str) -> int: ...

    @abstractmethod
    def delete(self, sha256: str) -> bool:
        """Remove the blob; True if it existed."""

    @abstractmethod
    def iter_blobs(self) -> Iterator[BlobInfo]: ...

    def put_bytes(self, data: bytes, *, expected_sha256: str | None = None) -> BlobRef:
        return self.put_stream(io.BytesIO(data), expected_sha256=expected_sha256)

    def put_path(self, path: Path | str, *, expected_sha256: str | None = None) -> BlobRef:
        """Store a file; it is hashed first, so a duplicate costs one read and no write."""
        digest, size = _hash_file(Path(path))
        _check_expected(digest, expected_sha256)
        if self._touch_if_exists(digest):
            return BlobRef(digest, size, False)
        with open(path, "rb") as f:  # the digest check catches a file changed in between
            return self.put_stream(f, expected_sha256=digest)

    def _touch_if_exists(self, sha256: str) -> bool:
        return self.exists(sha256)

    def read_bytes(self, sha256: str) -> bytes:
        with self.open(sha256) as f:
            return f.read()

    def iter_digests(self) -> Iterator[str]:
        for info in self.iter_blobs():
            yield info.sha256

    def gc(
        self, referenced: set[str], *, min_age_seconds: float = DEFAULT_GC_GRACE_SECONDS
    ) -> list[str]:
        """Delete blobs not in ``referenced`` and older than ``min_age_seconds``; return them."""
        cutoff = time.time() - min_age_seconds
        doomed = [
            info.sha256
            for info in self.iter_blobs()
            if info.sha256 not in referenced and info.modified <= cutoff
        ]
        return [digest for digest in doomed if self.delete(digest)]


class FileSystemBlobStore(BlobStore):
    """Blobs as files under ``root``; temporary files in ``root/tmp`` (same filesystem)."""

    def __init__(self, root: Path | str):
        self.root = Path(root)
        self.tmp_dir = self.root / "tmp"

    def path(self, sha256: str) -> Path:
        return self.root / blob_key(sha256)

    def put_stream(self, fileobj: BinaryIO, *, expected_sha256: str | None = None) -> BlobRef:
        if expected_sha256 is not None:
            validate_digest(expected_sha256.lower())
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=self.tmp_dir, prefix="put-")
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                digest, size = _copy_hashing(fileobj, out)
                out.flush()
                os.fsync(out.fileno())
            _check_expected(digest, expected_sha256)
            created = self._publish(tmp, self.path(digest))
        finally:
            tmp.unlink(missing_ok=True)
        return BlobRef(digest, size, created)

    def _publish(self, tmp: Path, final: Path) -> bool:
        """Move ``tmp`` into place atomically; False if the blob was already there."""
        final.parent.mkdir(parents=True, exist_ok=True)
        try:
            # link() fails if the target exists, which tells concurrent writers apart.
            os.link(tmp, final)
        except FileExistsError:
            os.utime(final)  # a re-put refreshes the GC grace period
            return False
        except OSError:  # filesystems without hard links
            if final.exists():
                os.utime(final)
                return False
            os.replace(tmp, final)
        _fsync_dir(final.parent)
        return True

    def _touch_if_exists(self, sha256: str) -> bool:
        try:
            os.utime(self.path(sha256))  # a re-put refreshes the GC grace period
        except FileNotFoundError:
            return False
        return True

    def open(self, sha256: str) -> BinaryIO:
        try:
            return open(self.path(sha256), "rb")
        except FileNotFoundError:
            raise BlobNotFound(f"no blob {sha256}") from None

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def size(self, sha256: str) -> int:
        try:
            return self.path(sha256).stat().st_size
        except FileNotFoundError:
            raise BlobNotFound(f"no blob {sha256}") from None

    def delete(self, sha256: str) -> bool:
        try:
            self.path(sha256).unlink()
        except FileNotFoundError:
            return False
        return True

    def iter_blobs(self) -> Iterator[BlobInfo]:
        base = self.root / "sha256"
        for level1 in _scandirs(base):
            for level2 in _scandirs(Path(level1.path)):
                with os.scandir(level2.path) as entries:
                    for entry in entries:
                        if entry.is_file() and _DIGEST_RE.match(entry.name):
                            st = entry.stat()
                            yield BlobInfo(entry.name, st.st_size, st.st_mtime)

    def gc(
        self, referenced: set[str], *, min_age_seconds: float = DEFAULT_GC_GRACE_SECONDS
    ) -> list[str]:
        deleted = super().gc(referenced, min_age_seconds=min_age_seconds)
        self._remove_stale_temps(min_age_seconds)
        return deleted

    def _remove_stale_temps(self, min_age_seconds: float) -> None:
        """Temp files left by a crashed writer."""
        cutoff = time.time() - max(min_age_seconds, 3600.0)
        for entry in _scanfiles(self.tmp_dir):
            try:
                if entry.stat().st_mtime <= cutoff:
                    os.unlink(entry.path)
            except FileNotFoundError:
                pass


def _scandirs(path: Path) -> Iterator[os.DirEntry]:
    try:
        with os.scandir(path) as entries:
            yield from sorted((e for e in entries if e.is_dir()), key=lambda e: e.name)
    except FileNotFoundError:
        return


def _scanfiles(path: Path) -> list[os.DirEntry]:
    try:
        with os.scandir(path) as entries:
            return [e for e in entries if e.is_file()]
    except FileNotFoundError:
        return []


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class S3RangeReader(io.RawIOBase):
    """A seekable read-only file over one S3 object; every read is a ranged GET."""

    def __init__(self, client, bucket: str, key: str, size: int):
        self._client, self._bucket, self._key = client, bucket, key
        self._size = size
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._pos = base + offset
        return self._pos

    def readinto(self, buffer) -> int:
        want = min(len(buffer), self._size - self._pos)
        if want <= 0:
            return 0
        rng = f"bytes={self._pos}-{self._pos + want - 1}"
        body = self._client.get_object(Bucket=self._bucket, Key=self._key, Range=rng)["Body"]
        data = body.read()
        n = len(data)
        buffer[:n] = data
        self._pos += n
        return n


class S3BlobStore(BlobStore):
    """Blobs as objects ``<prefix>sha256/ab/cd/<digest>`` in an S3-compatible bucket.

    The input is spooled to a local temp file while it is hashed (the key depends on the
    hash), then uploaded with boto3's managed transfer, which switches to multipart above
    ``multipart_threshold``.
    """

    def __init__(
        self,
        bucket: str,
        *,
        endpoint_url: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        region_name: str | None = None,
        prefix: str = "",
        spool_dir: Path | str | None = None,
        multipart_threshold: int = 64 * CHUNK_SIZE,
        client=None,
    ):
        import boto3
        from boto3.s3.transfer import TransferConfig

        self.bucket = bucket
        self.prefix = prefix
        self.spool_dir = str(spool_dir) if spool_dir else None
        self.client = client or boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            region_name=region_name or "us-east-1",
        )
        self.transfer_config = TransferConfig(
            multipart_threshold=multipart_threshold,
            multipart_chunksize=max(multipart_threshold // 8, 5 * CHUNK_SIZE),
        )

    def key(self, sha256: str) -> str:
        return self.prefix + blob_key(sha256)

    def ensure_bucket(self) -> None:
        """Create the bucket if it is missing (handy for dev servers)."""
        if not self._head_bucket():
            self.client.create_bucket(Bucket=self.bucket)

    def _head_bucket(self) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError:
            return False
        return True

    def put_stream(self, fileobj: BinaryIO, *, expected_sha256: str | None = None) -> BlobRef:
        if expected_sha256 is not None:
            validate_digest(expected_sha256.lower())
        with tempfile.TemporaryFile(dir=self.spool_dir) as spool:
            digest, size = _copy_hashing(fileobj, spool)
            _check_expected(digest, expected_sha256)
            if self._touch_if_exists(digest):
                return BlobRef(digest, size, False)
            spool.seek(0)
            self.client.upload_fileobj(
                spool, self.bucket, self.key(digest), Config=self.transfer_config
            )
        return BlobRef(digest, size, True)

    def _touch_if_exists(self, sha256: str) -> bool:
        """Refresh LastModified of an existing object (server-side copy onto itself), so a
        re-put restarts the GC grace period as on the filesystem backend."""
        from botocore.exceptions import ClientError

        if self._head(sha256) is None:
            return False
        key = self.key(sha256)
        try:
            self.client.copy_object(Bucket=self.bucket, Key=key, MetadataDirective="REPLACE",
                                    CopySource={"Bucket": self.bucket, "Key": key})
        except ClientError:  # e.g. objects over 5 GB cannot be copied in one request
            pass
        return True

    def _head(self, sha256: str) -> dict | None:
        from botocore.exceptions import ClientError

        try:
            return self.client.head_object(Bucket=self.bucket, Key=self.key(sha256))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise

    def open(self, sha256: str) -> BinaryIO:
        head = self._head(sha256)
        if head is None:
            raise BlobNotFound(f"no blob {sha256}")
        raw = S3RangeReader(self.client, self.bucket, self.key(sha256), head["ContentLength"])
        return io.BufferedReader(raw, buffer_size=8 * CHUNK_SIZE)

    def exists(self, sha256: str) -> bool:
        return self._head(sha256) is not None

    def size(self, sha256: str) -> int:
        head = self._head(sha256)
        if head is None:
            raise BlobNotFound(f"no blob {sha256}")
        return int(head["ContentLength"])

    def delete(self, sha256: str) -> bool:
        if self._head(sha256) is None:
            return False
        self.client.delete_object(Bucket=self.bucket, Key=self.key(sha256))
        return True

    def iter_blobs(self) -> Iterator[BlobInfo]:
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + "sha256/"):
            for obj in page.get("Contents", []):
                name = obj["Key"].rsplit("/", 1)[-1]
                if _DIGEST_RE.match(name):
                    yield BlobInfo(name, int(obj["Size"]), obj["LastModified"].timestamp())


def blobstore_from_env(env: Mapping[str, str], home: Path) -> BlobStore:
    """Build the store the environment asks for.

    ``HARTONOMOUS_BLOB_BACKEND``: ``fs`` (default; root ``HARTONOMOUS_BLOB_ROOT`` or
    ``<home>/blobs``) or ``s3`` (``HARTONOMOUS_S3_BUCKET``, ``HARTONOMOUS_S3_ENDPOINT_URL``,
    ``HARTONOMOUS_S3_PREFIX``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
    ``AWS_DEFAULT_REGION``).
    """
    backend = env.get("HARTONOMOUS_BLOB_BACKEND", "fs").strip().lower() or "fs"
    if backend == "fs":
        root = env.get("HARTONOMOUS_BLOB_ROOT") or Path(home) / "blobs"
        return FileSystemBlobStore(root)
    if backend == "s3":
        bucket = env.get("HARTONOMOUS_S3_BUCKET")
        if not bucket:
            raise BlobStoreError("HARTONOMOUS_S3_BUCKET is required for the s3 backend",
                                 code="blob.misconfigured")
        return S3BlobStore(
            bucket,
            endpoint_url=env.get("HARTONOMOUS_S3_ENDPOINT_URL") or None,
            access_key_id=env.get("AWS_ACCESS_KEY_ID") or None,
            secret_access_key=env.get("AWS_SECRET_ACCESS_KEY") or None,
            region_name=env.get("AWS_DEFAULT_REGION") or None,
            prefix=env.get("HARTONOMOUS_S3_PREFIX", ""),
        )
    raise BlobStoreError(f"unknown HARTONOMOUS_BLOB_BACKEND {backend!r} (fs or s3)",
                         code="blob.misconfigured")


__all__ = [
    "CHUNK_SIZE", "BlobRef", "BlobInfo", "BlobStore", "BlobStoreError", "BlobNotFound",
    "DigestMismatch", "InvalidDigest", "FileSystemBlobStore", "S3BlobStore",
    "S3RangeReader", "blob_key", "blobstore_from_env", "validate_digest",
]
