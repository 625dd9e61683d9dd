"""Vector search benchmark: HNSW (pgvector) through `atoms.selectors.vector_candidates` and through
`POST /api/search/semantic`, against exact search (NumPy brute force) in the same run.

Data: a Gaussian mixture of 384-d unit vectors (1,000 random unit centres, each point = centre +
isotropic noise of norm ~0.8, L2-normalised; in-cluster cosines ~0.6, cross-cluster ~0), more
realistic for HNSW than uniform random vectors (`--data random` for those). Queries are fresh draws
from the same mixture (not stored). Rows are written straight into the tenant schema with COPY:
minimal atom rows (no text) and `atoms_atomembedding` rows with model='all-MiniLM-L6-v2'; the partial
HNSW index `atom_hnsw_all_minilm_l6_v2` (m=16, ef_construction=64, from the migration) is dropped
before the load and re-created after it (timed), then EXPLAIN confirms the planner uses it.

Per size and ef_search: recall@10 against NumPy exact top-10, QPS and p50/p95 of single-client calls
to `vector_candidates(k=10)`; the peers in the same run are (a) the bare pgvector query (same index
expression, no join/filter, plain psycopg) and (b) NumPy brute force. Then the HTTP API (uvicorn,
2 workers, closed loop with --concurrency clients) with `{"vector": ..., "k": 10, "weights":
{"vector": 1}}` (server default ef_search 100, 40 candidates reranked exactly).

    .venv/bin/python bench/atoms/bench_search.py                           # 100K
    .venv/bin/python bench/atoms/bench_search.py --sizes 100000,1000000    # + 1M (HNSW build ~6-10 min)
    .venv/bin/python bench/atoms/bench_search.py --quick                   # 10K smoke run (< 1 min)

Writes only to its own database `bench_atoms_search` (dropped and recreated) and Redis db 9 (its Celery keys deleted).
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import re
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _setup  # noqa: E402

MODEL = "all-MiniLM-L6-v2"
INDEX = "atom_hnsw_all_minilm_l6_v2"
DIM = 384
K = 10


def mixture(n: int, rng: np.random.Generator, centres: np.ndarray | None, kind: str) -> np.ndarray:
    """(n, 384) float32 unit vectors: Gaussian mixture around `centres`, or uniform on the sphere."""
    if kind == "random":
        x = rng.standard_normal((n, DIM), dtype=np.float32)
    else:
        assign = rng.integers(0, len(centres), n)
        x = centres[assign] + rng.standard_normal((n, DIM), dtype=np.float32) * np.float32(0.8 / np.sqrt(DIM))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32)


def exact_topk(queries: np.ndarray, data: np.ndarray, ids: np.ndarray, k: int = K) -> tuple[np.ndarray, float]:
    """Exact cosine top-k (NumPy brute force, unit vectors → dot product); returns ids and s/query."""
    out = np.empty((len(queries), k), dtype=np.int64)
    t0 = time.perf_counter()
    for start in range(0, len(queries), 64):
        scores = queries[start:start + 64] @ data.T  # (q, N)
        top = np.argpartition(-scores, k, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1)
        out[start:start + 64] = ids[np.take_along_axis(top, order, axis=1)]
    return out, (time.perf_counter() - t0) / len(queries)


def recall(found: list[list[int]], truth: np.ndarray) -> float:
    return float(np.mean([len(set(f[:K]) & set(t.tolist())) / K for f, t in zip(found, truth, strict=True)]))


# ------------------------------------------------------------------ load
def load(conn, data: np.ndarray, first_id: int) -> tuple[float, float]:
    """COPY minimal atom rows and their embeddings, then build the HNSW index; returns (load s, build s)."""
    n = len(data)
    row = conn.execute("SELECT indexdef FROM pg_indexes WHERE schemaname = current_schema() AND indexname = %s",
                       [INDEX]).fetchone()
    ddl = row[0] if row else (f"CREATE INDEX {INDEX} ON atoms_atomembedding USING hnsw ((vector::vector({DIM})) "
                              f"vector_cosine_ops) WITH (m = 16, ef_construction = 64) WHERE model = '{MODEL}'")
    conn.execute(f"DROP INDEX IF EXISTS {INDEX}")
    t0 = time.perf_counter()
    with conn.transaction(), conn.cursor().copy(
            "COPY atoms_atom (id, sha256, modality, mime, size, in_blob, metadata, source_kind, source_uri, "
            "created_at) FROM STDIN") as copy:
        for i in range(first_id, first_id + n):
            copy.write_row((i, hashlib.sha256(f"bench-vector-{i}".encode()).hexdigest(), "text", "text/plain", 0,
                            False, "{}", "stream", "bench://search", "2026-11-25T00:00:00Z"))
    conn.execute("SELECT setval(pg_get_serial_sequence('atoms_atom', 'id'), %s)", [first_id + n])
    now = conn.execute("SELECT now()").fetchone()[0]
    with conn.transaction(), conn.cursor().copy(
            "COPY atoms_atomembedding (atom_id, model, dim, vector, created_at) FROM STDIN WITH (FORMAT BINARY)"
    ) as copy:
        copy.set_types(["bigint", "varchar", "smallint", "vector", "timestamptz"])
        for j in range(n):
            copy.write_row((first_id + j, MODEL, DIM, data[j], now))
    t_load = time.perf_counter() - t0
    conn.execute("ANALYZE atoms_atom")
    conn.execute("ANALYZE atoms_atomembedding")
    t0 = time.perf_counter()
    conn.execute("SET maintenance_work_mem = '6GB'")
    conn.execute("SET max_parallel_maintenance_workers = 1")
    conn.execute(ddl)
    t_build = time.perf_counter() - t0
    conn.execute("ANALYZE atoms_atomembedding")
    return t_load, t_build


# ------------------------------------------------------------------ in-database search
def explain_vector_candidates(query: np.ndarray, ef: int) -> str:
    """EXPLAIN ANALYZE of the exact SQL `vector_candidates` sends (captured with an execute wrapper)."""
    from django.db import connection

    from atoms.selectors import AtomFilters, vector_candidates

    plans: list[str] = []

    def wrapper(execute, sql, params, many, context):
        if "atoms_atomembedding" in sql and not plans:
            raw = context["cursor"].cursor  # the psycopg cursor: no wrapper recursion
            raw.execute("EXPLAIN (ANALYZE, COSTS OFF) " + sql, params)
            plans.extend(r[0] for r in raw.fetchall())
        return execute(sql, params, many, context)

    with connection.execute_wrapper(wrapper):
        vector_candidates(vector=query, model=MODEL, k=K, filters=AtomFilters(), ef_search=ef)
    return re.sub(r"'\[[-0-9.e,]+\]'", "'[... 384 floats ...]'", "\n".join(plans))


def run_selector(queries: np.ndarray, ef: int) -> tuple[list[list[int]], list[float], _setup.Meter]:
    from django.db import connection

    from atoms.selectors import AtomFilters, vector_candidates

    found, lat = [], []
    for q in queries[:20]:  # warm-up
        vector_candidates(vector=q, model=MODEL, k=K, filters=AtomFilters(), ef_search=ef)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        backend = cursor.fetchone()[0]
    with _setup.Meter([backend]) as meter:
        for q in queries:
            t = time.perf_counter()
            hits = vector_candidates(vector=q, model=MODEL, k=K, filters=AtomFilters(), ef_search=ef)
            lat.append((time.perf_counter() - t) * 1000)
            found.append([i for i, _ in hits])
    return found, lat, meter


def run_raw(conn, queries: np.ndarray, ef: int) -> tuple[list[list[int]], list[float], _setup.Meter]:
    """The peer: the bare pgvector query on the same partial index, plain psycopg, binary vector param."""
    sql = (f"SELECT atom_id FROM atoms_atomembedding WHERE model = %s "
           f"ORDER BY vector::vector({DIM}) <=> %s::vector({DIM}) LIMIT {K}")
    conn.execute(f"SET hnsw.ef_search = {int(ef)}")
    cur = conn.cursor()
    for q in queries[:20]:
        cur.execute(sql, [MODEL, q]).fetchall()
    found, lat = [], []
    with _setup.Meter([conn.info.backend_pid]) as meter:
        for q in queries:
            t = time.perf_counter()
            found.append([r[0] for r in cur.execute(sql, [MODEL, q]).fetchall()])
            lat.append((time.perf_counter() - t) * 1000)
    return found, lat, meter


# ------------------------------------------------------------------ HTTP
async def http_load(base: str, key: str, queries: np.ndarray, seconds: float, concurrency: int):
    import httpx

    bodies = [json.dumps({"vector": [round(float(v), 7) for v in q], "k": K, "weights": {"vector": 1}})
              for q in queries]
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    lat: list[float] = []
    found: dict[int, list[int]] = {}
    bad: dict[str, int] = {}
    counter = iter(range(10**9))
    deadline = time.perf_counter() + seconds

    async with httpx.AsyncClient(base_url=base, timeout=30,
                                 limits=httpx.Limits(max_connections=concurrency * 2)) as client:
        async def worker():
            while time.perf_counter() < deadline:
                i = next(counter)
                qi = i % len(bodies)
                t = time.perf_counter()
                try:
                    r = await client.post("/api/search/semantic", content=bodies[qi], headers=headers)
                    code = r.status_code
                except httpx.HTTPError as exc:
                    bad[type(exc).__name__] = bad.get(type(exc).__name__, 0) + 1
                    continue
                lat.append((time.perf_counter() - t) * 1000)
                if code != 200:
                    bad[str(code)] = bad.get(str(code), 0) + 1
                elif qi not in found:
                    found[qi] = [h["atom"]["id"] for h in r.json()["results"]]

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - t0
    return lat, found, bad, elapsed


def run_http(env, key, queries, truth, seconds, concurrency) -> dict:
    port = _setup.free_port()
    proc = _setup.start_server(env, port, workers=2)
    base = f"http://127.0.0.1:{port}"
    try:
        asyncio.run(http_load(base, key, queries[:50], min(3.0, seconds), concurrency))  # warm both workers
        with _setup.Meter([proc.pid], include_self=False) as meter:
            lat, found, bad, elapsed = asyncio.run(http_load(base, key, queries, seconds, concurrency))
    finally:
        _setup.stop_server(proc)
    idx = sorted(found)
    rec = recall([found[i] for i in idx], truth[idx]) if idx else float("nan")
    return {"n": len(lat), "qps": len(lat) / elapsed, "p50": _setup.percentile(lat, 50),
            "p95": _setup.percentile(lat, 95), "recall": rec, "bad": bad, "recall_n": len(idx),
            "server_cpu_ms": meter.cpu * 1000 / max(len(lat), 1), "foreign": meter.foreign_pct}


# ------------------------------------------------------------------ main
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="10K vectors, 200 queries, 3 s of HTTP (< 1 min)")
    ap.add_argument("--sizes", default=None, help="comma-separated corpus sizes (default 100000)")
    ap.add_argument("--ef", default="40,100", help="hnsw.ef_search values for the in-database runs")
    ap.add_argument("--queries", type=int, default=None, help="queries per measurement (default 1000)")
    ap.add_argument("--data", choices=["mixture", "random"], default="mixture")
    ap.add_argument("--http-seconds", type=float, default=None, help="HTTP closed-loop seconds (default 20)")
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--no-http", action="store_true")
    args = ap.parse_args()
    sizes = [int(s) for s in (args.sizes or ("10000" if args.quick else "100000")).split(",")]
    efs = [int(e) for e in args.ef.split(",")]
    nq = args.queries or (200 if args.quick else 1000)
    http_s = args.http_seconds or (3.0 if args.quick else 20.0)

    load_start = _setup.load_average()
    env = _setup.bench_env("bench_atoms_search")
    key = _setup.prepare(env)
    _setup.django_init(env)
    conn = _setup.psycopg_connect(env)
    rng = np.random.default_rng(42)
    centres = mixture(1000, rng, None, "random")
    queries = mixture(nq, np.random.default_rng(7), centres, args.data)

    sel_rows, http_rows, load_rows, plans = [], [], [], {}
    for size in sizes:
        conn.execute("TRUNCATE atoms_atom CASCADE")
        data = mixture(size, np.random.default_rng(size), centres, args.data)
        ids = np.arange(1, size + 1, dtype=np.int64)
        print(f"size {size:,}: loading + building HNSW ...", flush=True)
        t_load, t_build = load(conn, data, first_id=1)
        load_rows.append([f"{size:,}", f"{t_load:.1f}", f"{size / t_load:,.0f}", f"{t_build:.1f}"])
        print(f"  load {t_load:.1f} s ({size / t_load:,.0f} rows/s), HNSW build {t_build:.1f} s", flush=True)
        truth, np_s = exact_topk(queries, data, ids)
        plans[size] = explain_vector_candidates(queries[0], efs[0])
        if INDEX not in plans[size]:
            print(f"WARNING: the planner did not use {INDEX}:\n{plans[size]}")
        for ef in efs:
            found, lat, m = run_selector(queries, ef)
            rfound, rlat, rm = run_raw(conn, queries, ef)
            qps, rqps = nq / m.wall, nq / rm.wall
            cpu, rcpu = m.cpu * 1000 / nq, rm.cpu * 1000 / nq
            sel_rows.append([f"{size:,}", ef, f"{recall(found, truth):.3f}", f"{qps:,.0f}",
                             f"{_setup.percentile(lat, 50):.2f}", f"{_setup.percentile(lat, 95):.2f}", f"{cpu:.2f}",
                             f"{recall(rfound, truth):.3f}", f"{rqps:,.0f}", f"{_setup.percentile(rlat, 95):.2f}",
                             f"{rcpu:.2f}", f"{qps / rqps:.2f}", f"{rcpu / cpu:.2f}", f"{1 / np_s:,.0f}",
                             f"{qps * np_s:.2f}", f"{(m.foreign_pct + rm.foreign_pct) / 2:.0f}%"])
            print("  " + " | ".join(str(c) for c in sel_rows[-1]), flush=True)
        if not args.no_http:
            h = run_http(env, key, queries, truth, http_s, args.concurrency)
            sel_qps = float(sel_rows[-1][3].replace(",", ""))
            http_rows.append([f"{size:,}", args.concurrency, f"{h['n']:,}", f"{h['qps']:,.0f}", f"{h['p50']:.1f}",
                              f"{h['p95']:.1f}", f"{h['recall']:.3f} (n={h['recall_n']})",
                              json.dumps(h["bad"]) if h["bad"] else "0", f"{h['qps'] / sel_qps:.2f}",
                              f"{h['server_cpu_ms']:.1f}", f"{h['foreign']:.0f}%"])
            print("  http " + " | ".join(str(c) for c in http_rows[-1]), flush=True)
    conn.close()
    _setup.flush_redis(env)

    print()
    print(f"Machine: {_setup.machine()}; data: {args.data}, {nq:,} queries, k={K}; "
          f"load average at start {load_start}, at end {_setup.load_average()}")
    print("\n### Load (COPY atoms + embeddings) and HNSW build (m=16, ef_construction=64)\n")
    print(_setup.table(["vectors", "load s", "rows/s", "HNSW build s"], load_rows))
    print("\n### vector_candidates (single client) vs bare pgvector query and NumPy brute force, same run\n")
    print(_setup.table(["vectors", "ef_search", "recall@10", "QPS", "p50 ms", "p95 ms", "CPU ms/query",
                        "peer: bare pgvector recall@10", "bare QPS", "bare p95 ms", "bare CPU ms/query",
                        "QPS ÷ bare", "CPU-bound QPS ÷ bare", "NumPy exact QPS", "QPS ÷ NumPy",
                        "foreign load"], sel_rows))
    if http_rows:
        print(f"\n### POST /api/search/semantic, uvicorn 2 workers, closed loop, {http_s:.0f} s "
              "(server default ef_search 100, 40 candidates reranked)\n")
        print(_setup.table(["vectors", "clients", "requests", "QPS", "p50 ms", "p95 ms", "recall@10", "non-200",
                            f"QPS ÷ vector_candidates (ef {efs[-1]})", "server CPU ms/req (uvicorn)",
                            "foreign load"], http_rows))
    for size, plan in plans.items():
        print(f"\n### EXPLAIN ANALYZE of vector_candidates' SQL at {size:,} (ef_search {efs[0]})\n")
        print("```\n" + plan + "\n```")
    return 0


if __name__ == "__main__":
    sys.exit(main())
