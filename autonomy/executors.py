"""Executors: the only code through which the loop changes anything. Each checks its parameters
before acting, supports dry-run, and returns a JSON-able result; a refusal raises `Refused`.

reindex   REINDEX the tenant's HNSW index of a model, or tune the tenant's ef_search
recluster concepts.services.concepts_discover
reembed   embed text atoms that lack an embedding of the current text model
query     one read-only SELECT in a READ ONLY transaction, as a per-tenant read-only role, time-limited
api_call  a named internal service (no URLs, no network)
shell     argv only, whitelisted executable, scrubbed env, jail dir, rlimits, timeout, no network
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from django.db import connection, transaction

from hartonomous.errors import Forbidden


class Refused(Forbidden):
    code = "action_refused"


@dataclass
class Context:
    tenant: object
    dry_run: bool
    jail: Path | None = None  # the run's working directory (shell)
    timeout_s: float = 30.0


EXECUTORS: dict[str, type[Executor]] = {}


def register(cls):
    EXECUTORS[cls.name] = cls
    return cls


class Executor:
    name = ""
    base_risk = 0.1

    def check(self, params: dict, ctx: Context) -> None:
        """Raise Refused when the parameters are not acceptable (also in dry-run)."""

    def estimate(self, params: dict) -> tuple[int, float]:
        """(tokens, credits) the action may consume, checked against the budgets before it runs."""
        return 0, 0.0

    def run(self, params: dict, ctx: Context) -> dict:
        raise NotImplementedError


def executor_for(name: str, *, tenant) -> Executor:
    policy = getattr(tenant, "policy", None)
    allowed = list(policy.allowed_executors) if policy is not None else []
    if name not in EXECUTORS:
        raise Refused(f"Unknown executor {name!r}.", details={"executor": name})
    if name not in allowed:
        raise Refused(f"The tenant's policy does not allow the {name!r} executor.",
                      details={"executor": name, "allowed": allowed})
    return EXECUTORS[name]()


# ---------------------------------------------------------------- reindex
def indexed_models() -> dict[str, int]:
    import importlib

    return dict(importlib.import_module("atoms.migrations.0002_vector_indexes").INDEXED_MODELS)


def hnsw_index_name(model: str) -> str:
    return "atom_hnsw_" + "".join(c if c.isalnum() else "_" for c in model.lower())


@register
class Reindex(Executor):
    name, base_risk = "reindex", 0.4

    def check(self, params, ctx):
        op = params.get("op", "rebuild")
        if op not in ("rebuild", "set_ef_search"):
            raise Refused("reindex op must be rebuild or set_ef_search.", details={"op": op})
        if op == "rebuild" and params.get("model") not in indexed_models():
            raise Refused("No HNSW index for that model.", details={"model": params.get("model"),
                                                                    "models": sorted(indexed_models())})
        if op == "set_ef_search":
            ef = params.get("ef_search")
            if not isinstance(ef, int) or isinstance(ef, bool) or not 1 <= ef <= 1000:
                raise Refused("ef_search must be an integer in 1..1000.", details={"ef_search": ef})

    def run(self, params, ctx):
        from django.utils import timezone

        from .models import IndexSettings

        op = params.get("op", "rebuild")
        settings_row, _ = IndexSettings.objects.get_or_create(singleton=1)
        if op == "set_ef_search":
            before = settings_row.ef_search
            if not ctx.dry_run:
                settings_row.ef_search = params["ef_search"]
                settings_row.save(update_fields=["ef_search"])
            return {"op": op, "before": before, "after": params["ef_search"], "dry_run": ctx.dry_run}
        index = hnsw_index_name(params["model"])
        statement = f'REINDEX INDEX "{connection.schema_name}"."{index}"'
        if ctx.dry_run:
            return {"op": op, "statement": statement, "dry_run": True}
        with connection.cursor() as cursor:
            cursor.execute(statement)
        settings_row.last_reindex_at = timezone.now()
        settings_row.save(update_fields=["last_reindex_at"])
        return {"op": op, "statement": statement, "dry_run": False}


# ---------------------------------------------------------------- recluster
def concepts_discover():
    """The concepts app's discovery service, or None while it does not exist."""
    try:
        from concepts import services
    except ImportError:
        return None
    return getattr(services, "concepts_discover", None)


@register
class Recluster(Executor):
    name, base_risk = "recluster", 0.3

    def run(self, params, ctx):
        discover = concepts_discover()
        if discover is None:
            return {"status": "unavailable", "reason": "concepts.services.concepts_discover is not installed"}
        if ctx.dry_run:
            return {"status": "dry_run", "would_call": "concepts.services.concepts_discover"}
        run = discover(tenant=ctx.tenant, trigger="autonomy")
        return {"status": "done", "result": {"run": run.pk, "state": run.state}}


def _jsonable(value):
    import json

    return json.loads(json.dumps(value, default=str))


# ---------------------------------------------------------------- reembed
def text_model_name() -> str | None:
    from atoms.embedding import text_provider_name

    return text_provider_name()


@register
class Reembed(Executor):
    name, base_risk = "reembed", 0.1

    def check(self, params, ctx):
        limit = params.get("limit", 1000)
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 100_000:
            raise Refused("limit must be an integer in 1..100000.", details={"limit": limit})

    def estimate(self, params):
        return int(params.get("limit", 1000)) * 64, 0.0

    def run(self, params, ctx):
        from atoms.services import atoms_missing_embeddings, embed_atoms

        model = text_model_name()
        if model is None:
            return {"status": "unavailable", "reason": "no text embedding provider"}
        ids = atoms_missing_embeddings(model=model, limit=int(params.get("limit", 1000)))
        if ctx.dry_run:
            return {"status": "dry_run", "missing": len(ids), "model": model}
        embedded = embed_atoms(atom_ids=ids)
        left = len(atoms_missing_embeddings(model=model, limit=100_000))
        return {"status": "done", "missing": len(ids), "embedded": embedded, "left": left,
                "observed_gain": embedded / max(len(ids), 1), "tokens": embedded * 64}


# ---------------------------------------------------------------- query
READ_STARTS = ("select", "with", "values", "table", "explain")


def _single_read_statement(sql: str) -> str:
    import sqlparse

    if not isinstance(sql, str) or not sql.strip():
        raise Refused("query needs a non-empty sql string.")
    if "\x00" in sql:
        raise Refused("The query contains a NUL byte.")
    statements = [s for s in sqlparse.split(sql) if s.strip().rstrip(";").strip()]
    if len(statements) != 1:
        raise Refused("Exactly one SQL statement is allowed.", details={"statements": len(statements)})
    statement = statements[0].strip().rstrip(";").strip()
    first = statement.split(None, 1)[0].lower()
    if first not in READ_STARTS:
        raise Refused("Only read-only statements (SELECT, WITH, VALUES, TABLE, EXPLAIN) are allowed.",
                      details={"statement": first})
    if re.search(r"\bexplain\b.*\banalyze\b", statement, re.I | re.S):
        raise Refused("EXPLAIN ANALYZE executes the statement; not allowed.")
    return statement


_ROLE_CHECKED: dict[str, float] = {}
ROLE_REGRANT_S = 60.0


def readonly_role(schema: str) -> str | None:
    """A NOLOGIN role that may only read this schema's tables; None when we may not create roles.
    Grants are refreshed at most once a minute per process (tables created since then are not
    readable until the next refresh, which errs on the safe side)."""
    import time

    role = f"hartonomous_ro_{schema}"[:63]
    if time.monotonic() - _ROLE_CHECKED.get(schema, -1e9) < ROLE_REGRANT_S:
        return role
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role])
            if cursor.fetchone() is None:
                cursor.execute(f'CREATE ROLE "{role}" NOLOGIN')
            cursor.execute(f'GRANT USAGE ON SCHEMA "{schema}" TO "{role}"')
            cursor.execute(f'GRANT SELECT ON ALL TABLES IN SCHEMA "{schema}" TO "{role}"')
            cursor.execute(f'GRANT "{role}" TO CURRENT_USER')
    except Exception:
        return None
    if not connection.in_atomic_block:  # inside an outer transaction the grants may still be rolled back
        _ROLE_CHECKED[schema] = time.monotonic()
    return role


@register
class Query(Executor):
    name, base_risk = "query", 0.05
    max_rows = 100

    def check(self, params, ctx):
        _single_read_statement(params.get("sql"))
        timeout = params.get("timeout_ms", 5000)
        if not isinstance(timeout, int) or isinstance(timeout, bool) or not 1 <= timeout <= 60_000:
            raise Refused("timeout_ms must be an integer in 1..60000.", details={"timeout_ms": timeout})

    def run(self, params, ctx):
        from django.db import DatabaseError

        statement = _single_read_statement(params["sql"])
        schema = connection.schema_name
        if ctx.dry_run:
            return {"status": "dry_run", "sql": statement}
        role = readonly_role(schema)
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                # one round trip for the guards (simple query protocol runs them in order; any error
                # aborts the transaction before the statement runs)
                cursor.execute("; ".join([
                    "SET TRANSACTION READ ONLY",
                    f"SET LOCAL statement_timeout = {int(params.get('timeout_ms', 5000))}",
                    f'SET LOCAL search_path = "{schema}"',
                    *([f'SET LOCAL ROLE "{role}"'] if role else [])]))
                cursor.execute(statement)
                columns = [c.name for c in cursor.description or []]
                rows = cursor.fetchmany(self.max_rows) if cursor.description else []
                # roll back: reverts READ ONLY, the role and the search_path even inside a savepoint
                transaction.set_rollback(True)
        except DatabaseError as exc:
            raise Refused("The query was refused by the database.",
                          details={"error": str(exc).strip().splitlines()[0][:300]}) from None
        return {"status": "done", "columns": columns, "rows": _jsonable(rows), "role": role or "",
                "read_only_role": bool(role)}


# ---------------------------------------------------------------- api_call
def _svc_usage_totals(tenant, **_):
    from billing.selectors import usage_totals

    return usage_totals(tenant=tenant)


def _svc_credit_balance(tenant, **_):
    from billing.selectors import credit_balance

    return {"balance": str(credit_balance(tenant=tenant))}


def _svc_dead_letters(tenant, **_):
    from django.db.models import Count

    from .models import DeadLetter

    return {row["task"]: row["n"] for row in DeadLetter.objects.filter(state="dead").values("task")
            .annotate(n=Count("id"))}


def _svc_atom_counts(tenant, **_):
    from atoms.models import Atom, AtomEmbedding

    return {"atoms": Atom.objects.filter(deleted_at__isnull=True).count(),
            "embeddings": AtomEmbedding.objects.count()}


INTERNAL_SERVICES = {"usage_totals": _svc_usage_totals, "credit_balance": _svc_credit_balance,
                     "dead_letters": _svc_dead_letters, "atom_counts": _svc_atom_counts}


@register
class ApiCall(Executor):
    name, base_risk = "api_call", 0.05

    def check(self, params, ctx):
        service = params.get("service")
        if service not in INTERNAL_SERVICES:
            raise Refused("api_call may only call an internal service.",
                          details={"service": str(service)[:200], "services": sorted(INTERNAL_SERVICES)})

    def run(self, params, ctx):
        if ctx.dry_run:
            return {"status": "dry_run", "service": params["service"]}
        return {"status": "done", "result": _jsonable(INTERNAL_SERVICES[params["service"]](ctx.tenant))}


# ---------------------------------------------------------------- shell
SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"
DENIED_OPTIONS = ("-exec", "-execdir", "-ok", "-okdir", "-delete", "-fprint", "--to-command",
                  "--checkpoint-action", "--use-compress-program", "--output", "-o")
CPU_SECONDS, ADDRESS_SPACE, MAX_FILE = 30, 1024 * 1024**2, 16 * 1024**2
_NETNS: bool | None = None


def network_isolation_available() -> bool:
    """Whether `unshare -n` works here (needs root or user namespaces); checked once per process."""
    global _NETNS
    if _NETNS is None:
        tool = shutil.which("unshare", path=SAFE_PATH)
        try:
            _NETNS = bool(tool) and subprocess.run([tool, "-n", "true"], capture_output=True, timeout=5,
                                                   env={"PATH": SAFE_PATH}).returncode == 0
        except Exception:
            _NETNS = False
    return _NETNS


def _resolve(name: str) -> str | None:
    found = shutil.which(name, path=SAFE_PATH) if "/" not in name else (name if os.access(name, os.X_OK) else None)
    return os.path.realpath(found) if found else None


def whitelist_paths(whitelist) -> set[str]:
    return {path for path in (_resolve(str(name)) for name in whitelist or []) if path}


def check_argument(arg, jail: Path | None) -> None:
    if not isinstance(arg, str):
        raise Refused("Shell arguments must be strings.", details={"arg": repr(arg)[:100]})
    if "\x00" in arg or "\n" in arg:
        raise Refused("A shell argument contains a NUL or newline.", details={"arg": arg[:100]})
    if arg.split("=", 1)[0] in DENIED_OPTIONS:
        raise Refused("That option can run commands or write outside the jail.", details={"arg": arg[:100]})
    for piece in [arg, *arg.split("=")[1:]]:
        if ".." in Path(piece).parts or piece.startswith("~"):
            raise Refused("Path escapes are not allowed.", details={"arg": arg[:100]})
        if piece.startswith("/"):
            inside = jail is not None and os.path.realpath(piece).startswith(str(jail.resolve()) + os.sep)
            if not inside:
                raise Refused("Absolute paths outside the jail are not allowed.", details={"arg": arg[:100]})


def _limits():
    import resource

    resource.setrlimit(resource.RLIMIT_CPU, (CPU_SECONDS, CPU_SECONDS))
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))
    resource.setrlimit(resource.RLIMIT_FSIZE, (MAX_FILE, MAX_FILE))
    os.setsid()


@register
class Shell(Executor):
    name, base_risk = "shell", 0.7

    def check(self, params, ctx):
        argv = params.get("argv")
        if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
            raise Refused("shell needs argv: a non-empty list of strings (no shell string).")
        allowed = whitelist_paths(getattr(getattr(ctx.tenant, "policy", None), "shell_whitelist", []))
        exe = _resolve(argv[0]) if "\x00" not in argv[0] else None
        if exe is None or exe not in allowed:
            raise Refused("The executable is not in the tenant's shell whitelist.",
                          details={"executable": argv[0][:200], "whitelist": sorted(allowed)})
        for arg in argv[1:]:
            check_argument(arg, ctx.jail)
        timeout = params.get("timeout_s", 10)
        if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or not 0 < timeout <= 300:
            raise Refused("timeout_s must be a number in (0, 300].", details={"timeout_s": timeout})

    def run(self, params, ctx):
        exe = _resolve(params["argv"][0])
        argv = [exe, *params["argv"][1:]]
        isolated = network_isolation_available()
        if ctx.dry_run:
            return {"status": "dry_run", "argv": argv, "network_isolated": isolated}
        jail = ctx.jail or Path(tempfile.mkdtemp(prefix="autonomy-"))
        jail.mkdir(parents=True, exist_ok=True)
        full = [shutil.which("unshare", path=SAFE_PATH), "-n", "--", *argv] if isolated else argv
        try:
            done = subprocess.run(full, cwd=jail, env={"PATH": SAFE_PATH, "LANG": "C.UTF-8"}, shell=False,
                                  capture_output=True, timeout=float(params.get("timeout_s", 10)),
                                  preexec_fn=_limits, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as exc:
            return {"status": "timeout", "argv": argv, "network_isolated": isolated,
                    "stdout": (exc.stdout or b"")[-4000:].decode("utf-8", "replace"), "observed_gain": 0.0}
        return {"status": "done" if done.returncode == 0 else "failed", "returncode": done.returncode,
                "argv": argv, "network_isolated": isolated, "cwd": str(jail),
                "stdout": done.stdout[-4000:].decode("utf-8", "replace"),
                "stderr": done.stderr[-4000:].decode("utf-8", "replace"),
                "observed_gain": 1.0 if done.returncode == 0 else 0.0}
