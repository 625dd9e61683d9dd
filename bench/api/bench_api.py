"""API benchmark: authenticated endpoints vs a bare DRF view, through the real ASGI server.

One run measures, on uvicorn (`--workers 2`, app `hartonomous.asgi:application`):

* GET  /api/tenant       (Bearer API key: credential lookup, policy, Redis GCRA limiter, balance query)
* POST /api/keys         (admin key; JSON {"name": "b", "scopes": ["read"]}: creates a key row + history)
* GET / POST /api/_bench/bare, the baseline: a bare DRF APIView on the same server, no auth,
  no throttle, no database (mounted only with HARTONOMOUS_BENCH_ENDPOINTS=1)

each (a) open loop at a fixed rate (default 1,000 req/min), latency measured from the *scheduled*
send time (no coordinated omission), and (b) at saturation with `wrk` (closed loop, fixed number of
connections, `bench/api/wrk_request.lua`). Every response status is checked: non-2xx are counted and
reported (429 would mean the rate limiter got in the way; the bench tenant's policy has huge limits).

Set-up is self-contained: `hartonomous.stack.up()` starts/reuses the embedded PostgreSQL + Redis
under $HARTONOMOUS_HOME; the bench uses its own database `bench_hartonomous` (created on that server)
and Redis db 2, so the dev database is left alone. Migrations (`migrate_schemas`), the public tenant,
prices, a `bench` tenant with 1e9 credits, its high-limit policy and an all-scope key are made in a
subprocess with the bench environment. Then uvicorn starts on a free 127.0.0.1 port, the scenarios
run, the server's process group is terminated and a table is printed.

    .venv/bin/python bench/api/bench_api.py            # full run (~6 min), writes docs/benchmarks_api.md
    .venv/bin/python bench/api/bench_api.py --quick    # smoke run (~30 s of load), writes nothing

Options: --rate-per-min 1000 --open-seconds 60 --sat-seconds 20 --connections 16 --wrk-threads 1
--doc PATH (default docs/benchmarks_api.md on full runs; --no-doc to skip) --keep-server
--conn-max-age N (server's HARTONOMOUS_DB_CONN_MAX_AGE; default 0, see CONN_MAX_AGE below)
--db-pool (experiment: Django 5.1+'s psycopg pool via a temp settings overlay; needs psycopg-pool).
Exit status 1 when any response was not 2xx. The hand-written part of the doc below its
"findings" marker is kept when the doc is rewritten.

The load generator (Python asyncio/httpx for the open loop, wrk for saturation) shares the machine's
cores with the server, so saturation figures are a lower bound for a dedicated server box.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PY = sys.executable
LUA = Path(__file__).resolve().parent / "wrk_request.lua"
BENCH_DB = "bench_hartonomous"
KEY_BODY = json.dumps({"name": "b", "scopes": ["read"]})
SEED_TARGET_MS = 100.0  # the seed's target: p95 < 100 ms at 1,000 req/min
AIM_MS = 20.0  # our aim: p95 < 20 ms
# Persistent connections (the default HARTONOMOUS_DB_CONN_MAX_AGE=60) leak under ASGI: Django runs each
# request's sync code in a fresh thread (asgiref ThreadSensitiveContext), so every request opens a new
# connection that is never reused and only closed when garbage-collected; under load the shared
# embedded server hits max_connections (100) and answers "too many clients" (500s). The bench
# therefore runs with 0 (connect per request, closed at request end); --conn-max-age overrides it.
CONN_MAX_AGE = 0

sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
from _common import free_port, prepare, redis_db, start_server, stop_server, swap_db  # noqa: E402


# ------------------------------------------------------------------ set-up
def bench_env() -> dict[str, str]:
    from hartonomous import stack

    state = stack.up()
    dev_url = state["postgres"]["url"]
    redis_url = state["redis"]["url"]
    _ensure_database(dev_url)
    env = dict(os.environ)
    env.update(
        DATABASE_URL=swap_db(dev_url, BENCH_DB),
        REDIS_URL=redis_db(redis_url, 2),
        HARTONOMOUS_EMBEDDED="1",
        HARTONOMOUS_BENCH_ENDPOINTS="1",
        HARTONOMOUS_LOG_LEVEL="WARNING",
        HARTONOMOUS_DEBUG="0",
        HARTONOMOUS_DEMO="0",
        HARTONOMOUS_DB_CONN_MAX_AGE=str(CONN_MAX_AGE),
        DJANGO_SETTINGS_MODULE="hartonomous.settings",
        PYTHONUNBUFFERED="1",
    )
    return env


def _ensure_database(dev_url: str) -> None:
    import psycopg

    with psycopg.connect(swap_db(dev_url, "postgres"), autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [BENCH_DB]).fetchone():
            conn.execute(f'CREATE DATABASE "{BENCH_DB}"')


POOL_SETTINGS = """from hartonomous.settings import *  # noqa: F401,F403
DATABASES["default"]["CONN_MAX_AGE"] = 0
DATABASES["default"]["OPTIONS"] = {**DATABASES["default"].get("OPTIONS", {}), "pool": {"min_size": 2, "max_size": %d}}
"""


def pool_env(env: dict[str, str], max_size: int) -> dict[str, str]:
    """Settings overlay for --db-pool: Django 5.1+'s psycopg pool (needs psycopg-pool), CONN_MAX_AGE 0.
    Written to a temp dir so no project file changes; an experiment for the suggested fix."""
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="bench_api_"))
    (folder / "bench_pool_settings.py").write_text(POOL_SETTINGS % max_size)
    env = dict(env, DJANGO_SETTINGS_MODULE="bench_pool_settings",
               PYTHONPATH=os.pathsep.join([str(folder), str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    return env


def _tree_cpu(pid: int | None) -> float:
    import psutil

    total = 0.0
    if not pid:
        return total
    try:
        root = psutil.Process(pid)
        t = root.cpu_times()  # children_*: descendants already exited and reaped (PostgreSQL backends)
        total += t.children_user + t.children_system
        for p in [root, *root.children(recursive=True)]:
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.NoSuchProcess:
                pass
    except psutil.NoSuchProcess:
        pass
    return total


def server_cpu_seconds(proc: subprocess.Popen) -> float:
    """utime + stime of the uvicorn supervisor and its workers."""
    return _tree_cpu(proc.pid)


class CpuMeter:
    """Splits the machine's busy CPU over a phase into: server (uvicorn), PostgreSQL + Redis, this
    load generator (incl. wrk), and *other* (processes that are not part of the benchmark)."""

    def __init__(self, proc: subprocess.Popen):
        self.proc = proc

    @staticmethod
    def _services() -> tuple[int | None, ...]:
        from hartonomous import stack

        st = stack.read_state()  # re-read: someone may restart the shared stack mid-run
        return st.get("postgres", {}).get("pid"), st.get("redis", {}).get("pid")

    def _snap(self):
        import psutil

        t = psutil.cpu_times()
        busy = t.user + t.nice + t.system + getattr(t, "irq", 0) + getattr(t, "softirq", 0) + getattr(t, "steal", 0)
        me = psutil.Process().cpu_times()
        own = me.user + me.system + me.children_user + me.children_system
        services = self._services()
        return services, (time.perf_counter(), busy, server_cpu_seconds(self.proc),
                          sum(_tree_cpu(p) for p in services), own)

    def __enter__(self):
        self.pids, self.a = self._snap()
        return self

    def __exit__(self, *exc):
        pids, b = self._snap()
        wall, busy, server, services, own = (y - x for x, y in zip(self.a, b, strict=True))
        cores = os.cpu_count() or 1
        self.server = server
        if pids != self.pids:  # PostgreSQL/Redis restarted by someone else during the phase
            print(f"WARNING: the shared stack restarted during this phase ({self.pids} -> {pids})")
            self.total = self.other_pct = None
            return
        self.total = server + services + own
        self.other_pct = max(0.0, busy - server - services - own) / (wall * cores) * 100
        self.busy_pct = busy / (wall * cores) * 100


# ------------------------------------------------------------------ scenarios
@dataclass
class Scenario:
    name: str
    method: str
    path: str
    auth: bool
    body: str | None = None
    baseline: str | None = None  # the name of the bare scenario it is compared with


@dataclass
class Result:
    scenario: str
    mode: str  # "open" or "sat"
    requests: int
    seconds: float
    p50: float
    p95: float
    p99: float
    max: float
    non2xx: dict[str, int] = field(default_factory=dict)
    cpu_ms_per_req: float | None = None
    other_pct: float | None = None  # machine CPU used by processes outside the benchmark, % of all cores
    all_cpu_ms_per_req: float | None = None  # server + PostgreSQL + Redis + load generator
    note: str = ""

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def bad(self) -> int:
        return sum(self.non2xx.values())


SCENARIOS = [
    Scenario("bare GET", "GET", "/api/_bench/bare", auth=False),
    Scenario("GET /api/tenant", "GET", "/api/tenant", auth=True, baseline="bare GET"),
    Scenario("bare POST", "POST", "/api/_bench/bare", auth=False, body=KEY_BODY),
    Scenario("POST /api/keys", "POST", "/api/keys", auth=True, body=KEY_BODY, baseline="bare POST"),
]


def _headers(sc: Scenario, key: str) -> dict[str, str]:
    headers = {}
    if sc.auth:
        headers["Authorization"] = f"Bearer {key}"
    if sc.body is not None:
        headers["Content-Type"] = "application/json"
    return headers


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    idx = min(len(sorted_values) - 1, max(0, int(round(q / 100 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[idx]


async def _open_loop(base: str, sc: Scenario, key: str, rate_per_s: float, seconds: float):
    """Send on a fixed schedule regardless of responses; latency = completion - scheduled send time."""
    import httpx

    n = int(rate_per_s * seconds)
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as client:
        headers = _headers(sc, key)
        content = sc.body.encode() if sc.body is not None else None

        async def one(scheduled: float) -> None:
            try:
                resp = await client.request(sc.method, sc.path, headers=headers, content=content)
                code = str(resp.status_code)
            except httpx.HTTPError as exc:
                code = type(exc).__name__
            latencies.append(time.perf_counter() - scheduled)
            if not code.startswith("2"):
                statuses[code] = statuses.get(code, 0) + 1

        tasks = []
        t0 = time.perf_counter() + 0.05
        for i in range(n):
            scheduled = t0 + i / rate_per_s
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(scheduled)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - t0
    return latencies, statuses, elapsed


def run_open(base: str, sc: Scenario, key: str, rate_per_min: float, seconds: float, meter: CpuMeter) -> Result:
    with meter:
        lat, statuses, elapsed = asyncio.run(_open_loop(base, sc, key, rate_per_min / 60.0, seconds))
    lat_ms = sorted(x * 1000 for x in lat)
    return Result(sc.name, "open", len(lat_ms), elapsed, percentile(lat_ms, 50), percentile(lat_ms, 95),
                  percentile(lat_ms, 99), lat_ms[-1] if lat_ms else float("nan"), statuses,
                  meter.server * 1000 / max(len(lat_ms), 1), other_pct=meter.other_pct,
                  all_cpu_ms_per_req=meter.total * 1000 / max(len(lat_ms), 1) if meter.total else None)


def run_wrk(base: str, sc: Scenario, key: str, seconds: float, connections: int, threads: int,
            meter: CpuMeter, record: bool = True) -> Result | None:
    env = dict(os.environ, BENCH_METHOD=sc.method, BENCH_BODY=sc.body or "", BENCH_KEY=key if sc.auth else "")
    args = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{max(1, round(seconds))}s",
            "--timeout", "10s", "--latency", "-s", str(LUA), base + sc.path]
    with meter:
        out = subprocess.run(args, env=env, capture_output=True, text=True, check=True).stdout
    if not record:
        return None
    line = next(ln for ln in out.splitlines() if ln.startswith("BENCH_WRK "))
    f = {k: float(v) for k, v in (kv.split("=") for kv in line.split()[1:])}
    non2xx = {}
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        non2xx["non-2xx/3xx"] = int(m.group(1))
    for k in ("err_connect", "err_read", "err_write", "err_timeout"):
        if f[k]:
            non2xx[k[4:]] = int(f[k])
    n = int(f["requests"])
    return Result(sc.name, "sat", n, f["duration_us"] / 1e6, f["p50"] / 1000, f["p95"] / 1000, f["p99"] / 1000,
                  f["max"] / 1000, non2xx, meter.server * 1000 / max(n, 1), other_pct=meter.other_pct,
                  all_cpu_ms_per_req=meter.total * 1000 / max(n, 1) if meter.total else None,
                  note=f"wrk -t{threads} -c{connections}")


def preflight(base: str, key: str) -> None:
    """Each endpoint answers 2xx with the expected shape before anything is timed."""
    import httpx

    with httpx.Client(base_url=base, timeout=10) as c:
        for sc in SCENARIOS:
            r = c.request(sc.method, sc.path, headers=_headers(sc, key),
                          content=sc.body.encode() if sc.body else None)
            if r.status_code // 100 != 2:
                raise RuntimeError(f"{sc.method} {sc.path} -> {r.status_code}: {r.text[:300]}")
        r = c.get("/api/tenant", headers={"Authorization": f"Bearer {key}"})
        pol = r.json().get("policy", {})
        if pol.get("requests_per_minute", 0) < 1_000_000:
            raise RuntimeError(f"bench tenant policy not raised: {pol}")


# ------------------------------------------------------------------ report
def machine() -> dict[str, str]:
    model = ""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        model = next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")), "")
    except OSError:
        pass
    import django
    import uvicorn

    return {
        "cpu": model or platform.processor(),
        "vcpus": str(os.cpu_count()),
        "python": platform.python_version(),
        "django": django.get_version(),
        "uvicorn": uvicorn.__version__,
    }


def fmt_row(r: Result) -> str:
    bad = ", ".join(f"{k}: {v}" for k, v in r.non2xx.items()) or "0"
    cpu = f"{r.cpu_ms_per_req:.2f}" if r.cpu_ms_per_req is not None else "-"
    other = f"{r.other_pct:.0f}%" if r.other_pct is not None else "-"
    allc = f"{r.all_cpu_ms_per_req:.2f}" if r.all_cpu_ms_per_req is not None else "-"
    return (f"| {r.scenario} | {r.requests:,} | {r.rps:,.1f} | {r.p50:.2f} | {r.p95:.2f} | {r.p99:.2f} | "
            f"{r.max:.1f} | {cpu} | {allc} | {other} | {bad} |")


HEADER = ("| scenario | requests | req/s | p50 ms | p95 ms | p99 ms | max ms | server CPU ms/req "
          "| all CPU ms/req | foreign load | non-2xx |\n"
          "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")


def ratios(results: dict[tuple[str, str], Result]) -> list[str]:
    rows = ["| endpoint | vs | saturation req/s ratio | CPU-bound req/s ratio | saturation p95 ratio | "
            "p95 ratio at 1,000 req/min | p95 at 1,000 req/min | seed target p95 < 100 ms | aim p95 < 20 ms |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- | --- |"]
    for sc in SCENARIOS:
        if not sc.baseline:
            continue
        o, ob = results.get((sc.name, "open")), results.get((sc.baseline, "open"))
        s, sb = results.get((sc.name, "sat")), results.get((sc.baseline, "sat"))
        rps_ratio = f"{s.rps / sb.rps:.2f}" if s and sb and sb.rps else "-"
        sat_p95 = f"{s.p95 / sb.p95:.2f}" if s and sb and sb.p95 else "-"
        open_p95 = f"{o.p95 / ob.p95:.2f}" if o and ob and ob.p95 else "-"
        p95 = f"{o.p95:.2f} ms" if o else "-"
        seed = ("met" if o.p95 < SEED_TARGET_MS else "MISSED") if o else "-"
        aim = ("met" if o.p95 < AIM_MS else "MISSED") if o else "-"
        cpu_ratio = (f"{sb.all_cpu_ms_per_req / s.all_cpu_ms_per_req:.2f}"
                     if s and sb and s.all_cpu_ms_per_req and sb.all_cpu_ms_per_req else "-")
        rows.append(f"| {sc.name} | {sc.baseline} | {rps_ratio} | {cpu_ratio} | {sat_p95} | {open_p95} | {p95} "
                    f"| {seed} | {aim} |")
    return rows


def render(results: dict[tuple[str, str], Result], args, mach: dict[str, str]) -> str:
    open_rows = [fmt_row(r) for (n, m), r in results.items() if m == "open"]
    sat_rows = [fmt_row(r) for (n, m), r in results.items() if m == "sat"]
    return "\n".join([
        f"### Open loop, {args.rate_per_min:,.0f} req/min ({args.rate_per_min / 60:.1f} req/s), "
        f"{args.open_seconds:.0f} s per scenario; latency from the scheduled send time",
        "", HEADER, *open_rows, "",
        f"### Saturation: wrk -t{args.wrk_threads} -c{args.connections}, {args.sat_seconds:.0f} s per scenario "
        f"(after a {args.warmup_seconds:.0f} s warm-up)",
        "", HEADER, *sat_rows, "",
        "### Authenticated endpoint vs the bare DRF view (same server, same run)", "", *ratios(results), "",
    ])


FINDINGS_MARK = "<!-- findings: hand-written below this line, kept when the bench rewrites the file -->"


def write_doc(path: Path, body: str, mach: dict[str, str], args, cmd: str) -> None:
    old = path.read_text() if path.exists() else ""
    findings = FINDINGS_MARK + old.split(FINDINGS_MARK, 1)[1] if FINDINGS_MARK in old else FINDINGS_MARK + "\n"
    text = f"""# API benchmark (bench/api/bench_api.py)

Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} with `{cmd}`{' (Django psycopg pool)' if args.db_pool else ''}.

Machine: {mach['cpu']}, {mach['vcpus']} vCPU; Python {mach['python']}, Django {mach['django']},
uvicorn {mach['uvicorn']} (`--workers 2`, `hartonomous.asgi:application`, `--no-access-log`, log level
WARNING), embedded PostgreSQL 18 (unix socket) and Redis 6.2 (unix socket, db 2), database
`{BENCH_DB}`. **The load generators (Python asyncio/httpx for the open loop, wrk for saturation) run
on the same {mach['vcpus']} cores as the two server workers, PostgreSQL and Redis**, so saturation figures are a
lower bound for a dedicated server. Server CPU ms/req = CPU time of the uvicorn processes (supervisor +
workers; not PostgreSQL/Redis) over the phase, divided by the requests served; *all CPU ms/req* adds
PostgreSQL, Redis and the load generator: {mach['vcpus']} cores × 1000 / that figure is the CPU-bound ceiling of
the endpoint on this box when nothing else runs, and the *CPU-bound req/s ratio* (bare ÷ endpoint all-CPU
per request) is the load-independent version of the req/s ratio. *Foreign load* = CPU
used during the phase by processes that are not part of the benchmark (not uvicorn, PostgreSQL, Redis,
the load generator or wrk), as a % of all cores: when it is high, other work on the machine was
competing and the row is pessimistic.

Database connections: `HARTONOMOUS_DB_CONN_MAX_AGE={args.conn_max_age}` for the server. With the default 60,
Django under ASGI opens a new connection per request (each request's sync code runs in a fresh thread)
and keeps it until garbage collection: under saturation the embedded PostgreSQL (max_connections 100)
refuses with "too many clients" and requests fail with 500. See the findings below.

Scenarios: `GET /api/tenant` (API key lookup, policy, Redis GCRA limiter, credit balance query);
`POST /api/keys` with `{KEY_BODY}` (admin key; inserts a key row and its history row); the baseline
`GET`/`POST /api/_bench/bare`, a DRF `APIView` with no authentication, throttle or database access of
its own, mounted only with `HARTONOMOUS_BENCH_ENDPOINTS=1`; the project's middleware still runs on it,
including `TenantResolutionMiddleware`'s host → Domain lookup (one query, hence one database connection,
per request without a credential), so the baseline is "DRF + our middleware", not bare Django. Every status is checked; the bench tenant's rate limits are
set to 10M req/min so the limiter runs its Redis script on every request but never refuses.

Reference (FIELD_NOTES): DRF + Postgres under gunicorn, 2 workers: saturates ~680 req/s; p95 7.5 ms at
1,000 req/min. Seed target: p95 < 100 ms at 1,000 req/min; our aim: p95 < 20 ms.

{body}
{findings}"""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


# ------------------------------------------------------------------ main
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="short phases (smoke run); writes no doc")
    ap.add_argument("--rate-per-min", type=float, default=1000.0)
    ap.add_argument("--open-seconds", type=float, default=None)
    ap.add_argument("--sat-seconds", type=float, default=None)
    ap.add_argument("--warmup-seconds", type=float, default=None)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--wrk-threads", type=int, default=1)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--doc", default=None, help="markdown output (default docs/benchmarks_api.md on full runs)")
    ap.add_argument("--no-doc", action="store_true")
    ap.add_argument("--keep-server", action="store_true", help="leave uvicorn running (prints its URL and key)")
    ap.add_argument("--conn-max-age", type=int, default=CONN_MAX_AGE,
                    help="HARTONOMOUS_DB_CONN_MAX_AGE for the server (default 0: see CONN_MAX_AGE above)")
    ap.add_argument("--db-pool", action="store_true",
                    help="experiment: serve with Django's psycopg connection pool (OPTIONS pool, CONN_MAX_AGE 0)")
    args = ap.parse_args()
    args.open_seconds = args.open_seconds or (5.0 if args.quick else 60.0)
    args.sat_seconds = args.sat_seconds or (3.0 if args.quick else 20.0)
    args.warmup_seconds = args.warmup_seconds if args.warmup_seconds is not None else (1.0 if args.quick else 3.0)

    env = bench_env()
    env["HARTONOMOUS_DB_CONN_MAX_AGE"] = str(args.conn_max_age)
    key = prepare(env)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    if args.db_pool:
        env = pool_env(env, max_size=8)
    proc = start_server(env, port, args.workers)
    print(f"uvicorn --workers {args.workers} on {base} (pgid {proc.pid}), DB_CONN_MAX_AGE={args.conn_max_age}"
          f"{', psycopg pool' if args.db_pool else ''}")
    meter = CpuMeter(proc)
    results: dict[tuple[str, str], Result] = {}
    try:
        preflight(base, key)
        for sc in SCENARIOS:  # warm both workers' connections and caches
            run_wrk(base, sc, key, args.warmup_seconds, 4, 1, meter, record=False)
        for sc in SCENARIOS:
            r = run_open(base, sc, key, args.rate_per_min, args.open_seconds, meter)
            results[(sc.name, "open")] = r
            print("open ", fmt_row(r), flush=True)
        for sc in SCENARIOS:
            run_wrk(base, sc, key, args.warmup_seconds, args.connections, args.wrk_threads, meter, record=False)
            r = run_wrk(base, sc, key, args.sat_seconds, args.connections, args.wrk_threads, meter)
            results[(sc.name, "sat")] = r
            print("sat  ", fmt_row(r), flush=True)
    finally:
        if args.keep_server:
            print(f"server left running: {base}  key {key}  (kill -TERM -{proc.pid})")
        else:
            stop_server(proc)

    mach = machine()
    body = render(results, args, mach)
    print()
    print(f"Machine: {mach['cpu']}, {mach['vcpus']} vCPU (load generator and server share them)")
    print(body)
    total_bad = sum(r.bad for r in results.values())
    if not args.quick and not args.no_doc or args.doc:
        cmd = ".venv/bin/python bench/api/bench_api.py " + " ".join(sys.argv[1:])
        path = Path(args.doc) if args.doc else REPO / "docs" / "benchmarks_api.md"
        write_doc(path, body, mach, args, cmd.strip())
        print(f"wrote {path}")
    if total_bad:
        print(f"WARNING: {total_bad} non-2xx/failed responses (see the non-2xx column)")
    return 1 if total_bad else 0


if __name__ == "__main__":
    sys.exit(main())
