"""Vector search benchmark: HNSW (pgvector) through `atoms.selectors.vector_candidates` and through
`POST /api/search/semantic`, against exact search (NumPy brute force) in the same run.

Data: a Gaussian mixture of 384-d unit vectors (1,000 random unit centres, each point = centre +
isotropic noise of norm ~0.8, L2-normalised; in-cluster cosines ~0.6, cross-cluster ~0), more
realistic for HNSW than uniform random vectors (`--data random` for those). Within a cluster that
noise is isotropic in all 383 directions, which makes each cluster nearly as hard as random data;
`--data lowrank` models the low intrinsic dimension of real sentence embeddings instead: the same
centres, but each cluster's noise (norm ~0.8) lives in its own random 16-dimensional subspace, plus
a small isotropic part (norm ~0.2). Queries are fresh draws from the same distribution (not stored). Rows are written straight into the tenant schema with COPY:
minimal atom rows (no text) and `atoms_atomembedding` rows with model='all-MiniLM-L6-v2'; the partial
HNSW index `atom_hnsw_all_minilm_l6_v2` (m=16, ef_construction=64, from the migration; halfvec since
0005) is dropped before the load and re-created after it (timed), then EXPLAIN confirms the planner
uses it. `--bare halfvec,vector` also builds a peer index of the other precision (`bench_hnsw_vector`).

Per size, ef_search and number of clients (`--clients 1,2,4`: a closed loop of that many threads,
each with its own connection, sharing the queries): recall@10 against NumPy exact top-10, QPS,
p50/p95 and CPU per query (this process + its backends) of `vector_candidates(k=10)`; the peers in
the same run are (a) the bare pgvector query on each index of `--bare` (index expression only, no
join/filter/Django, plain psycopg, binary vector parameter) and (b) NumPy brute force. Then the HTTP API (uvicorn,
2 workers, closed loop with --concurrency clients) with `{"vector": ..., "k": 10, "weights":
{"vector": 1}}` (server default ef_search 100, 40 candidates reranked exactly).

    .venv/bin/python bench/atoms/bench_search.py                           # 100K
    .venv/bin/python bench/atoms/bench_search.py --sizes 100000,1000000    # + 1M (HNSW build ~6-10 min)
    .venv/bin/python bench/atoms/bench_search.py --quick                   # 10K smoke run (< 1 min)
    .venv/bin/python bench/atoms/bench_search.py --sizes 1000000 --reuse   # keep the loaded rows and indexes

Writes only to its own database `bench_atoms_search` (dropped and recreated, unless `--reuse` finds it
holding the same data kind and size: then the load and the builds of indexes already there are
skipped) and Redis db 9 (its Celery keys deleted).
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import re
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _setup  # noqa: E402

MODEL = "all-MiniLM-L6-v2"
INDEX = "atom_hnsw_all_minilm_l6_v2"  # the product index (migrations 0002, 0005)
DB = "bench_atoms_search"
DIM = 384
K = 10


SUBSPACE = 16  # --data lowrank: dimensions of each cluster's noise subspace


def make_bases(rng: np.random.Generator, n_centres: int) -> np.ndarray:
    """(C, 384, 16) float32: an orthonormal basis of each cluster's noise subspace (--data lowrank)."""
    raw = rng.standard_normal((n_centres, DIM, SUBSPACE), dtype=np.float32)
    return np.linalg.qr(raw)[0].astype(np.float32)


def mixture(n: int, rng: np.random.Generator, centres: np.ndarray | None, kind: str,
            bases: np.ndarray | None = None) -> np.ndarray:
    """(n, 384) float32 unit vectors: Gaussian mixture around `centres` (isotropic noise, or noise in
    each cluster's subspace of `bases` plus a little isotropic noise), or uniform on the sphere."""
    if kind == "random":
        x = rng.standard_normal((n, DIM), dtype=np.float32)
    elif kind == "lowrank":
        assign = rng.integers(0, len(centres), n)
        x = centres[assign] + rng.standard_normal((n, DIM), dtype=np.float32) * np.float32(0.2 / np.sqrt(DIM))
        z = rng.standard_normal((n, SUBSPACE), dtype=np.float32) * np.float32(0.8 / np.sqrt(SUBSPACE))
        order = np.argsort(assign, kind="stable")
        bounds = np.searchsorted(assign[order], np.arange(len(centres) + 1))
        for c in range(len(centres)):
            rows = order[bounds[c]:bounds[c + 1]]
            x[rows] += z[rows] @ bases[c].T  # (n_c, 16) @ (16, 384)
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
def index_ddl(conn, name: str, kind: str) -> str:
    """The definition of index `name` as it stands (the product index: from the migrations), else a
    partial HNSW index of precision `kind` (vector | halfvec) on this model, m 16, ef_construction 64."""
    row = conn.execute("SELECT indexdef FROM pg_indexes WHERE schemaname = current_schema() AND indexname = %s",
                       [name]).fetchone()
    return row[0] if row else (f"CREATE INDEX {name} ON atoms_atomembedding USING hnsw ((vector::{kind}({DIM})) "
                               f"{kind}_cosine_ops) WITH (m = 16, ef_construction = 64) WHERE model = '{MODEL}'")


def index_kind(ddl: str) -> str:
    return "halfvec" if "halfvec" in ddl else "vector"


def loaded_marker(conn) -> str | None:
    return conn.execute("SELECT obj_description('atoms_atomembedding'::regclass, 'pg_class')").fetchone()[0]


def load(conn, data: np.ndarray, first_id: int, marker: str) -> float:
    """COPY minimal atom rows and their embeddings (the HNSW indexes dropped first); returns seconds."""
    n = len(data)
    conn.execute("COMMENT ON TABLE atoms_atomembedding IS NULL")
    conn.execute("TRUNCATE atoms_atom CASCADE")
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
    conn.execute(f"COMMENT ON TABLE atoms_atomembedding IS '{marker}'")
    return t_load


def build(conn, ddl: str) -> float:
    """Build one HNSW index (as the migration would, but with enough maintenance_work_mem); seconds."""
    t0 = time.perf_counter()
    conn.execute("SET maintenance_work_mem = '6GB'")
    conn.execute("SET max_parallel_maintenance_workers = 1")
    conn.execute(ddl)
    t_build = time.perf_counter() - t0
    conn.execute("ANALYZE atoms_atomembedding")
    return t_build


def prepare_indexes(conn, data: np.ndarray, marker: str, bare: list[str], reuse: bool) -> tuple[str, list]:
    """Load the rows and build the product index plus a peer index for each other precision in `bare`,
    or keep what a previous run left (--reuse with the same marker); returns (product kind, load row)."""
    product = index_ddl(conn, INDEX, "halfvec")  # (the fallback: migration 0005's precision)
    wanted = {INDEX: product} | {peer_index(k): index_ddl(conn, peer_index(k), k)
                                 for k in bare if k != index_kind(product)}
    present = {r[0] for r in conn.execute("SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()")}
    reused = reuse and loaded_marker(conn) == marker
    if not reused:  # (a peer index left by an earlier run would be filled row by row during the load)
        for name in set(wanted) | {n for n in present if n.startswith(peer_index(""))}:
            conn.execute(f"DROP INDEX IF EXISTS {name}")
        present -= set(wanted)
        t_load = load(conn, data, 1, marker)
    builds = {name: ("kept" if name in present else f"{build(conn, ddl):.1f}") for name, ddl in wanted.items()}
    row = [f"{len(data):,}", "kept" if reused else f"{t_load:.1f}",
           "" if reused else f"{len(data) / t_load:,.0f}", "; ".join(f"{n} {b}" for n, b in builds.items())]
    return index_kind(product), row


def peer_index(kind: str) -> str:
    return f"bench_hnsw_{kind}"


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


class SelectorClient:
    """One client of `vector_candidates`, in its own thread with its own Django connection (pooled)."""

    def __init__(self, tenant, ef: int):
        from django.db import connection

        connection.set_tenant(tenant)
        self.ef = ef
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            self.pid = cursor.fetchone()[0]

    def search(self, q: np.ndarray) -> list[int]:
        from atoms.selectors import AtomFilters, vector_candidates

        return [i for i, _ in vector_candidates(vector=q, model=MODEL, k=K, filters=AtomFilters(), ef_search=self.ef)]

    def close(self) -> None:
        from django.db import connections

        connections.close_all()  # back to the pool


class BareClient:
    """The peer: the bare pgvector query on one index (its expression only), plain psycopg, binary vector."""

    def __init__(self, conn, kind: str, ef: int):
        self.sql = (f"SELECT atom_id FROM atoms_atomembedding WHERE model = %s "
                    f"ORDER BY vector::{kind}({DIM}) <=> %s::vector::{kind}({DIM}) LIMIT {K}")
        conn.execute(f"SET hnsw.ef_search = {int(ef)}")
        self.cur, self.pid = conn.cursor(), conn.info.backend_pid

    def search(self, q: np.ndarray) -> list[int]:
        return [r[0] for r in self.cur.execute(self.sql, [MODEL, q]).fetchall()]

    def close(self) -> None:
        self.cur.close()


def closed_loop(open_client, queries: np.ndarray, clients: int):
    """`clients` threads, each opening its client (+ 20 warm-up queries), then all together taking
    every clients-th query in turn; returns (ids per query, latencies ms, Meter)."""
    found: list = [None] * len(queries)
    lat: list[float] = []
    pids: list[int] = []
    errors: list[BaseException] = []
    ready, go = threading.Barrier(clients + 1, timeout=300), threading.Barrier(clients + 1, timeout=300)

    def work(c: int) -> None:
        client = None
        try:
            client = open_client(c)
            pids.append(client.pid)
            for q in queries[:20]:
                client.search(q)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
            errors.append(exc)
            ready.abort()
            return
        ready.wait()
        go.wait()
        mine = []
        for i in range(c, len(queries), clients):
            t = time.perf_counter()
            found[i] = client.search(queries[i])
            mine.append((time.perf_counter() - t) * 1000)
        lat.extend(mine)
        client.close()

    threads = [threading.Thread(target=work, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    try:
        ready.wait()
    except threading.BrokenBarrierError:
        raise RuntimeError(f"a client failed to start: {errors[:1]}") from (errors[0] if errors else None)
    with _setup.Meter(pids) as meter:
        go.wait()
        for t in threads:
            t.join()
    return found, lat, meter


def measure(open_client, queries, truth, clients) -> dict:
    found, lat, m = closed_loop(open_client, queries, clients)
    n = len(queries)
    return {"recall": recall(found, truth), "qps": n / m.wall, "p50": _setup.percentile(lat, 50),
            "p95": _setup.percentile(lat, 95), "cpu": m.cpu * 1000 / n, "foreign": m.foreign_pct}


def search_rows(size, tenant, env, queries, truth, efs, client_counts, kinds, np_s) -> list[list]:
    """One row per (ef_search, clients): vector_candidates, then the bare query on each index kind."""
    rows = []
    conns = [_setup.psycopg_connect(env) for _ in range(max(client_counts))]
    try:
        for ef in efs:
            for clients in client_counts:
                ours = measure(lambda c, ef=ef: SelectorClient(tenant, ef), queries, truth, clients)
                bare = {k: measure(lambda c, k=k, ef=ef: BareClient(conns[c], k, ef), queries, truth, clients)
                        for k in kinds}
                peer = bare[kinds[0]]
                row = [f"{size:,}", ef, clients, f"{ours['recall']:.3f}", f"{ours['qps']:,.0f}", f"{ours['p50']:.2f}",
                       f"{ours['p95']:.2f}", f"{ours['cpu']:.2f}"]
                for k in kinds:
                    row += [f"{bare[k]['recall']:.3f}", f"{bare[k]['qps']:,.0f}", f"{bare[k]['p95']:.2f}",
                            f"{bare[k]['cpu']:.2f}"]
                foreign = np.mean([ours["foreign"]] + [b["foreign"] for b in bare.values()])
                row += [f"{ours['qps'] / peer['qps']:.2f}", f"{peer['cpu'] / ours['cpu']:.2f}",
                        f"{ours['qps'] * np_s:.1f}", f"{foreign:.0f}%", _setup.load_average()]
                rows.append(row)
                print("  " + " | ".join(str(c) for c in row), flush=True)
    finally:
        for conn in conns:
            conn.close()
    return rows


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
def parse_args():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="10K vectors, 200 queries, 3 s of HTTP (< 1 min)")
    ap.add_argument("--sizes", default=None, help="comma-separated corpus sizes (default 100000)")
    ap.add_argument("--ef", default="40,100", help="hnsw.ef_search values for the in-database runs")
    ap.add_argument("--clients", default="1,2,4", help="closed-loop client counts for the in-database runs")
    ap.add_argument("--bare", default="halfvec,vector",
                    help="index precisions for the bare-pgvector peer (the product's first; others get a peer index)")
    ap.add_argument("--queries", type=int, default=None, help="queries per measurement (default 1000)")
    ap.add_argument("--data", choices=["mixture", "lowrank", "random"], default="mixture")
    ap.add_argument("--reuse", action="store_true", help="keep rows + indexes a previous run of the same data/size left")
    ap.add_argument("--http-seconds", type=float, default=None, help="HTTP closed-loop seconds (default 20)")
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--no-http", action="store_true")
    return ap.parse_args()


def open_database(reuse: bool) -> dict:
    env = _setup.bench_env(DB, recreate=False)
    if not (reuse and _database_exists(env)):
        _setup.bench_env(DB, recreate=True)
    return env


def _database_exists(env: dict) -> bool:
    import psycopg

    try:
        psycopg.connect(env["DATABASE_URL"]).close()
        return True
    except psycopg.OperationalError:
        return False


def main() -> int:
    args = parse_args()
    sizes = [int(s) for s in (args.sizes or ("10000" if args.quick else "100000")).split(",")]
    efs, client_counts = [int(e) for e in args.ef.split(",")], [int(c) for c in args.clients.split(",")]
    nq = args.queries or (200 if args.quick else 1000)
    http_s = args.http_seconds or (3.0 if args.quick else 20.0)

    load_start = _setup.load_average()
    env = open_database(args.reuse)
    key = _setup.prepare(env)
    tenant = _setup.django_init(env)
    conn = _setup.psycopg_connect(env)
    rng = np.random.default_rng(42)
    centres = mixture(1000, rng, None, "random")
    bases = make_bases(rng, len(centres)) if args.data == "lowrank" else None
    queries = mixture(nq, np.random.default_rng(7), centres, args.data, bases)

    sel_rows, http_rows, load_rows, plans, kinds = [], [], [], {}, []
    for size in sizes:
        data = mixture(size, np.random.default_rng(size), centres, args.data, bases)
        ids = np.arange(1, size + 1, dtype=np.int64)
        print(f"size {size:,}: loading + building HNSW ...", flush=True)
        product, load_row = prepare_indexes(conn, data, f"bench_search {args.data} {size}",
                                            args.bare.split(","), args.reuse)
        kinds = [product] + [k for k in args.bare.split(",") if k != product]
        load_rows.append(load_row)
        print("  load s, rows/s, builds s: " + " | ".join(load_row[1:]), flush=True)
        truth, np_s = exact_topk(queries, data, ids)
        plans[size] = explain_vector_candidates(queries[0], efs[0])
        if INDEX not in plans[size]:
            print(f"WARNING: the planner did not use {INDEX}:\n{plans[size]}")
        sel_rows += search_rows(size, tenant, env, queries, truth, efs, client_counts, kinds, np_s)
        if not args.no_http:
            h = run_http(env, key, queries, truth, http_s, args.concurrency)
            http_rows.append([f"{size:,}", args.concurrency, f"{h['n']:,}", f"{h['qps']:,.0f}", f"{h['p50']:.1f}",
                              f"{h['p95']:.1f}", f"{h['recall']:.3f} (n={h['recall_n']})",
                              json.dumps(h["bad"]) if h["bad"] else "0",
                              f"{h['server_cpu_ms']:.1f}", f"{h['foreign']:.0f}%"])
            print("  http " + " | ".join(str(c) for c in http_rows[-1]), flush=True)
    conn.close()
    _setup.flush_redis(env)
    report(args, nq, load_start, load_rows, sel_rows, http_rows, plans, kinds, efs, http_s)
    return 0


def report(args, nq, load_start, load_rows, sel_rows, http_rows, plans, kinds, efs, http_s) -> None:
    print()
    print(f"Machine: {_setup.machine()}; data: {args.data}, {nq:,} queries, k={K}; "
          f"load average at start {load_start}, at end {_setup.load_average()}")
    print("\n### Load (COPY atoms + embeddings) and HNSW builds (m=16, ef_construction=64)\n")
    print(_setup.table(["vectors", "load s", "rows/s", "HNSW build s"], load_rows))
    print(f"\n### vector_candidates ({kinds[0]} index) vs bare pgvector query per index and NumPy brute force, "
          "same run; N clients = closed loop of N threads\n")
    bare_cols = [c for k in kinds for c in (f"bare {k} recall@10", f"bare {k} QPS", f"bare {k} p95 ms",
                                            f"bare {k} CPU ms/q")]
    print(_setup.table(["vectors", "ef_search", "clients", "recall@10", "QPS", "p50 ms", "p95 ms", "CPU ms/q",
                        *bare_cols, f"QPS ÷ bare {kinds[0]}", f"CPU bare {kinds[0]} ÷ ours", "QPS ÷ NumPy 1 core",
                        "foreign load", "loadavg after"], sel_rows))
    if http_rows:
        print(f"\n### POST /api/search/semantic, uvicorn 2 workers, closed loop, {http_s:.0f} s "
              "(server default ef_search 100, 40 candidates reranked)\n")
        print(_setup.table(["vectors", "clients", "requests", "QPS", "p50 ms", "p95 ms", "recall@10", "non-200",
                            "server CPU ms/req (uvicorn)", "foreign load"], http_rows))
    for size, plan in plans.items():
        print(f"\n### EXPLAIN ANALYZE of vector_candidates' SQL at {size:,} (ef_search {efs[0]})\n")
        print("```\n" + plan + "\n```")


if __name__ == "__main__":
    sys.exit(main())
