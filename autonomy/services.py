"""The loop's writes. The run row is the source of truth: `phase` is the next phase to run, and a
phase commits its results together with the advance, then enqueues the next phase after commit.
A Celery message is only a nudge: a duplicate or late one finds the phase already done and returns;
a lost one is re-sent by `runs_resume_stalled`. Actions are claimed (state → running, attempts + 1)
in a committed UPDATE before they execute, so none executes twice, even after a SIGKILL."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import tempfile
import threading
import time
import zlib
from contextlib import contextmanager, nullcontext
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

from django.db import IntegrityError, connection, transaction
from django.db.models import F, Sum
from django.utils import timezone

from hartonomous.errors import Conflict, NotFound, PaymentRequired, ValidationFailed

from . import signals_analyze
from .executors import Context, Refused, executor_for
from .models import (
    PHASE_ORDER,
    ActionOutcome,
    Approval,
    CandidateAction,
    DeadLetter,
    ImprovementRun,
    Phase,
    Signal,
)

log = logging.getLogger(__name__)
A, R = CandidateAction.State, ImprovementRun.State
APPROVAL_TTL = timedelta(hours=24)
QUEUE_ENV = "HARTONOMOUS_AUTONOMY_QUEUE"  # a dedicated Celery queue for phase messages (default: the default queue)
PAUSE_ENV = "HARTONOMOUS_AUTONOMY_PHASE_PAUSE_S"  # fault injection: widen each phase (kill tests)


# ---------------------------------------------------------------- dashboard
_pusher: tuple[int, queue.SimpleQueue] | None = None


def _pusher_loop(messages: queue.SimpleQueue) -> None:
    """One event loop per process for dashboard pushes: the channel layer keeps its Redis connection
    (async_to_sync per message would open a new loop and connection each time, ~15 ms)."""
    import asyncio

    from channels.layers import get_channel_layer

    loop = asyncio.new_event_loop()
    layer = get_channel_layer()
    while True:
        group, message = messages.get()
        try:
            if layer is not None:
                loop.run_until_complete(layer.group_send(group, message))
        except Exception:  # the dashboard being down never stops a run
            pass


def _push(run: ImprovementRun, **info) -> None:
    """Tell the tenant's dashboard (`/ws/progress/`) where the run is; fire and forget."""
    global _pusher
    from hartonomous.progress import progress_group

    if _pusher is None or _pusher[0] != os.getpid():  # a forked worker child starts its own thread
        _pusher = (os.getpid(), queue.SimpleQueue())
        threading.Thread(target=_pusher_loop, args=(_pusher[1],), daemon=True, name="autonomy-push").start()
    message = {"type": "progress.message", "job": "autonomy", "state": run.phase, "run": run.pk,
               "run_state": run.state, "done": PHASE_ORDER.index(run.phase), "total": 4, **info}
    _pusher[1].put((progress_group(connection.schema_name), message))


# ---------------------------------------------------------------- creating and starting runs
def _policy(tenant):
    from tenants.models import TenantSecurityPolicy

    return getattr(tenant, "policy", None) or TenantSecurityPolicy.objects.get_or_create(tenant=tenant)[0]


def _validate_requested(actions) -> list[dict]:
    if not isinstance(actions, list) or len(actions) > 50:
        raise ValidationFailed("actions must be a list of at most 50 actions.")
    out = []
    for i, action in enumerate(actions):
        if not isinstance(action, dict) or not isinstance(action.get("executor"), str) \
                or not isinstance(action.get("params", {}), dict):
            raise ValidationFailed("Each action needs an executor name and a params object.", details={"index": i})
        gain = action.get("expected_gain", 0.1)
        if isinstance(gain, bool) or not isinstance(gain, (int, float)) or not 0 <= gain <= 1:
            raise ValidationFailed("expected_gain must be a number in [0, 1].", details={"index": i})
        out.append({"executor": action["executor"][:20], "params": action.get("params", {}),
                    "expected_gain": float(gain), "rationale": str(action.get("rationale", "operator request"))[:500]})
    return out


def run_create(*, tenant, trigger: str = "api", dry_run: bool = False, actions: list | None = None,
               start: bool = True) -> ImprovementRun:
    """Queue a run; with `start` it starts at once unless the tenant already has an active one (then in
    order: the active run's end starts the next)."""
    policy = _policy(tenant)
    run = ImprovementRun.objects.create(
        trigger=trigger, dry_run=dry_run, requested_actions=_validate_requested(actions or []),
        max_actions=policy.max_actions_per_run, max_seconds=policy.max_seconds_per_run,
        max_tokens=policy.max_tokens_per_run, max_credits=policy.max_credits_per_run)
    if start:
        run_promote(tenant=tenant)
        run.refresh_from_db()
    return run


def _promote_sql() -> str:
    table = connection.ops.quote_name(ImprovementRun._meta.db_table)
    return (f"UPDATE {table} SET state = %s, started_at = %s, heartbeat_at = %s "
            f"WHERE id = (SELECT id FROM {table} WHERE state = %s ORDER BY created_at, id LIMIT 1) AND state = %s "
            f"AND NOT EXISTS (SELECT 1 FROM {table} WHERE state IN (%s, %s)) RETURNING *")


def run_promote(*, tenant) -> ImprovementRun | None:
    """Start the oldest queued run if none is active, in one statement; the partial unique index
    (one active run per tenant) decides a race between two promoters."""
    now = timezone.now()
    params = [R.RUNNING, now, now, R.QUEUED, R.QUEUED, *ImprovementRun.ACTIVE]
    try:
        # a savepoint only inside a caller's transaction; in autocommit the statement is its own
        with transaction.atomic() if connection.in_atomic_block else nullcontext():
            promoted = list(ImprovementRun.objects.raw(_promote_sql(), params))
    except IntegrityError:
        return None
    if not promoted:
        return None
    run = promoted[0]
    _enqueue(run, run.phase)
    _push(run)
    return run


_held: list | None = None  # messages to send once this process releases its run lock


def _enqueue(run: ImprovementRun, phase: str) -> None:
    """Send the phase message after commit, and, inside a phase, only after the run lock is released
    (otherwise the next phase could arrive on another worker while the lock is still held)."""
    from .tasks import phase_task

    schema, run_id, queue = connection.schema_name, run.pk, os.environ.get(QUEUE_ENV) or None

    def send():
        phase_task.apply_async((schema, run_id, phase), queue=queue)

    transaction.on_commit(lambda: send() if _held is None else _held.append(send))


# ---------------------------------------------------------------- phase execution
@contextmanager
def run_lock(run_id: int):
    """A session advisory lock per (schema, run): one worker per run at a time; a killed worker's
    connection closes and its lock goes with it."""
    key = zlib.crc32(connection.schema_name.encode()) - 2**31
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", [key, run_id])
        got = cursor.fetchone()[0]
    try:
        yield got
    finally:
        if got:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s, %s)", [key, run_id])


def phase_execute(*, tenant, run_id: int, phase: str) -> str:
    """Run `phase` of the run if it is the run's next phase; otherwise do nothing (a duplicate).
    'busy' means another worker holds the run (the task retries shortly)."""
    global _held
    _held = []
    try:
        return _phase_locked(tenant, run_id, phase)
    finally:
        held, _held = _held, None
        for send in held:
            send()


def _phase_locked(tenant, run_id: int, phase: str) -> str:
    with run_lock(run_id) as got:
        if not got:
            return "busy"
        run = ImprovementRun.objects.filter(pk=run_id).first()
        if run is None or run.state != R.RUNNING or run.phase != phase:
            return "skipped"
        pause = float(os.environ.get(PAUSE_ENV, "0") or 0)
        if pause:
            time.sleep(pause)
        started = time.perf_counter()
        try:
            PHASES[phase](tenant, run, started)
        except Exception as exc:
            from django.db import InterfaceError, OperationalError

            if isinstance(exc, (OperationalError, InterfaceError)):
                raise
            run_fail(tenant=tenant, run_id=run_id, error=f"{phase}: {exc!r}")
            raise
        return "done"


def _advance(run: ImprovementRun, to: str, started: float, **info) -> None:
    """Persist the finished phase and the next one in the caller's transaction; enqueue after commit."""
    ms = (time.perf_counter() - started) * 1000
    run.phase_log = [*run.phase_log, {"phase": run.phase, "ms": round(ms, 2), "at": timezone.now().isoformat(), **info}]
    run.phase, run.heartbeat_at = to, timezone.now()
    if to == Phase.DONE:
        run.state = R.STOPPED if run.stop_reason else R.DONE
        run.finished_at = timezone.now()
    # only what a phase hand-off changes: the usage counters are written by their own F() updates
    run.save(update_fields=["phase", "phase_log", "heartbeat_at", "state", "finished_at"])
    if to == Phase.DONE:
        tenant = connection.tenant
        transaction.on_commit(lambda: run_promote(tenant=tenant))
    else:
        _enqueue(run, to)
    transaction.on_commit(lambda: _push(run))


def run_fail(*, tenant, run_id: int, error: str) -> None:
    with transaction.atomic():
        run = ImprovementRun.objects.select_for_update().get(pk=run_id)
        if run.state in ImprovementRun.ACTIVE:
            run.state, run.error, run.finished_at = R.FAILED, error[:5000], timezone.now()
            run.save()
            transaction.on_commit(lambda: run_promote(tenant=tenant))
            transaction.on_commit(lambda: _push(run))


def _analyze(tenant, run, started):
    gathered = signals_analyze.gather(tenant)
    with transaction.atomic():
        Signal.objects.filter(run=run).delete()
        Signal.objects.bulk_create([Signal(run=run, **g) for g in gathered])
        _advance(run, Phase.HYPOTHESIZE, started, signals=len(gathered))


def _idempotency_key(run, executor, params) -> str:
    digest = hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:24]
    return f"run{run.pk}:{executor}:{digest}"


def _base_risk(executor: str) -> float:
    from .executors import EXECUTORS

    return EXECUTORS[executor].base_risk if executor in EXECUTORS else 1.0


def _hypothesize(tenant, run, started):
    from .scorer import rank

    signals = {s.kind: {"available": s.available, "value": s.value, "details": s.details, "id": s.pk}
               for s in run.signals.all()}
    # An operator's explicit plan is run as given (the signals are still recorded); otherwise the
    # candidates come from the signals.
    candidates = [] if run.requested_actions else signals_analyze.candidates_from(signals)
    for requested in run.requested_actions:
        # an operator may not lower an executor's risk below its floor (that would skip approval)
        candidates.append({**requested, "signal": None, "risk": _base_risk(requested["executor"])})
    ranked = rank(candidates)
    with transaction.atomic():
        seen = set()
        for position, c in enumerate(ranked):
            key = _idempotency_key(run, c["executor"], c["params"])
            if key in seen:
                continue
            seen.add(key)
            CandidateAction.objects.create(
                run=run, signal_id=signals.get(c["signal"], {}).get("id") if c["signal"] else None,
                executor=c["executor"], params=c["params"], idempotency_key=key, rationale=c["rationale"],
                expected_gain=c["expected_gain"], risk=c["risk"], score=c["score"], rank=position,
                state=A.PROPOSED if len(seen) <= run.max_actions else A.SKIPPED,
                error="" if len(seen) <= run.max_actions else "ranked below the run's action budget")
        _advance(run, Phase.ACT, started, candidates=len(seen),
                 scored_by=ranked[0]["scored_by"] if ranked else "rules")


def _jail(run) -> Path:
    path = Path(tempfile.gettempdir()) / "hartonomous-autonomy" / connection.schema_name / f"run-{run.pk}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def budget_check(*, tenant, run: ImprovementRun, action: CandidateAction) -> str:
    """'' when the action fits the run's and the tenant's budgets, else the reason it does not."""
    if run.actions_used + 1 > run.max_actions:
        return f"budget: actions {run.actions_used}/{run.max_actions} used"
    if run.seconds_used >= run.max_seconds:
        return f"budget: seconds {run.seconds_used:.1f}/{run.max_seconds} used"
    if run.tokens_used + action.estimated_tokens > run.max_tokens:
        return f"budget: tokens {run.tokens_used}+{action.estimated_tokens} would exceed {run.max_tokens}"
    if run.credits_used + action.estimated_credits > run.max_credits:
        return f"budget: credits {run.credits_used}+{action.estimated_credits} would exceed {run.max_credits}"
    policy = _policy(tenant)
    today = timezone.now().replace(hour=0, minute=0, second=0, microsecond=0)
    day_tokens = ImprovementRun.objects.filter(created_at__gte=today).aggregate(t=Sum("tokens_used"))["t"] or 0
    if day_tokens + action.estimated_tokens > policy.max_tokens_per_day:
        return f"tenant budget: tokens today {day_tokens}+{action.estimated_tokens} > {policy.max_tokens_per_day}"
    if not run.dry_run and action.estimated_credits > 0:
        from billing.services import require_credits

        try:
            require_credits(tenant=tenant, needed=action.estimated_credits)
        except PaymentRequired:
            return "tenant budget: credit balance exhausted"
    return ""


_OPEN = [A.RUNNING, A.PROPOSED, A.APPROVED, A.AWAITING]


def _act(tenant, run, started):
    """Run the run's open actions in rank order. They are read once: only the worker holding the run
    lock runs an action, makes one await approval or adds to the run's usage (kept in memory as well,
    for the budget checks); an approval answered meanwhile is caught by _act_finish, which reads again."""
    threshold = _policy(tenant).approval_risk_threshold
    while True:
        open_actions = list(run.actions.filter(state__in=_OPEN).order_by("rank", "id"))
        # a claimed action whose worker died: never run again (at most once); its outcome is unknown
        interrupted = [a.pk for a in open_actions if a.state == A.RUNNING]
        if interrupted:
            CandidateAction.objects.filter(pk__in=interrupted, state=A.RUNNING).update(
                state=A.FAILED, error="interrupted: the worker stopped while it ran; not repeated",
                finished_at=timezone.now())
        for action in [a for a in open_actions if a.state in (A.PROPOSED, A.APPROVED)]:
            _act_one(tenant, run, action, threshold)
            if run.stop_reason:  # a budget stopped the run: the rest were skipped
                break
        if not _act_finish(run, started, awaiting=any(a.state == A.AWAITING for a in open_actions)):
            return


def _act_finish(run, started, *, awaiting: bool) -> bool:
    """No action left to run: wait for approvals if any is pending, else hand over to Learn. True when
    an approval was answered meanwhile and there is an action to run after all. The run row is locked
    first, so an answer that commits now either is seen here or finds the run waiting and wakes it."""
    with transaction.atomic():
        if awaiting:
            list(ImprovementRun.objects.select_for_update().filter(pk=run.pk).values_list("pk"))
            states = set(run.actions.filter(state__in=[A.AWAITING, A.APPROVED, A.PROPOSED])
                         .values_list("state", flat=True))
            if states - {A.AWAITING}:
                return True
            if states:
                run.state, run.heartbeat_at = R.WAITING, timezone.now()
                run.save(update_fields=["state", "heartbeat_at"])
                transaction.on_commit(lambda: _push(run))
                return False
        _advance(run, Phase.LEARN, started, executed=run.actions_used)
    return False


def _refuse(action: CandidateAction, exc: Refused) -> None:
    action.state, action.finished_at = A.REFUSED, timezone.now()
    action.error = json.dumps({"code": exc.code, "message": exc.message, "details": exc.details}, default=str)
    action.save(update_fields=["state", "error", "finished_at"])
    log.warning("autonomy action refused: %s", action.error, extra={"schema": connection.schema_name})


def _act_one(tenant, run, action, threshold) -> None:
    ctx = Context(tenant=tenant, dry_run=run.dry_run, jail=_jail(run))
    try:
        executor = executor_for(action.executor, tenant=tenant)
        executor.check(action.params, ctx)
    except Refused as exc:
        return _refuse(action, exc)
    tokens, credits = executor.estimate(action.params)
    action.estimated_tokens, action.estimated_credits = tokens, Decimal(str(credits))
    reason = budget_check(tenant=tenant, run=run, action=action)
    if reason:
        with transaction.atomic():
            run.actions.filter(state__in=[A.PROPOSED, A.APPROVED, A.AWAITING]).update(state=A.SKIPPED, error=reason)
            run.stop_reason = reason
            run.save(update_fields=["stop_reason"])
        return
    if action.state == A.PROPOSED and action.risk > threshold and not run.dry_run:
        with transaction.atomic():
            action.state = A.AWAITING
            action.save(update_fields=["state", "estimated_tokens", "estimated_credits"])
            Approval.objects.create(action=action, expected_effect=f"{action.rationale} (expected gain "
                                    f"{action.expected_gain:.2f}, risk {action.risk:.2f} > {threshold:.2f})",
                                    evidence=_evidence(action), expires_at=timezone.now() + APPROVAL_TTL)
        return
    claimed = CandidateAction.objects.filter(pk=action.pk, state=action.state).update(
        state=A.RUNNING, attempts=F("attempts") + 1, started_at=timezone.now(),
        estimated_tokens=tokens, estimated_credits=action.estimated_credits)
    if not claimed:
        return
    t0 = time.perf_counter()
    try:
        result, state, error = executor.run(action.params, ctx), A.DONE, ""
    except Refused as exc:
        result, state, error = {}, A.REFUSED, json.dumps({"code": exc.code, "message": exc.message,
                                                         "details": exc.details}, default=str)
    except Exception as exc:  # an executor failing is an outcome, not a crash of the run
        result, state, error = {}, A.FAILED, repr(exc)[:5000]
    seconds = time.perf_counter() - t0
    tokens_used = int(result.get("tokens", 0) if isinstance(result, dict) else 0)
    with transaction.atomic():
        CandidateAction.objects.filter(pk=action.pk).update(state=state, result=result, error=error,
                                                           finished_at=timezone.now())
        ImprovementRun.objects.filter(pk=run.pk).update(
            actions_used=F("actions_used") + 1, seconds_used=F("seconds_used") + seconds,
            tokens_used=F("tokens_used") + tokens_used,
            credits_used=F("credits_used") + action.estimated_credits, heartbeat_at=timezone.now())
    action.state = state
    run.actions_used, run.seconds_used = run.actions_used + 1, run.seconds_used + seconds
    run.tokens_used, run.credits_used = run.tokens_used + tokens_used, run.credits_used + action.estimated_credits


def _evidence(action: CandidateAction) -> dict:
    signal = action.signal
    return {"executor": action.executor, "params": action.params, "score": action.score,
            "signal": {"kind": signal.kind, "value": signal.value, "details": signal.details} if signal else None}


def _learn(tenant, run, started):
    from .scorer import features, scorer_train

    actions = list(run.actions.select_related("outcome"))
    with transaction.atomic():
        recorded = 0
        for action in actions:
            if action.state not in (A.DONE, A.FAILED) or run.dry_run or hasattr(action, "outcome") \
                    or action.result.get("status") == "unavailable":
                continue
            if action.state == A.DONE:
                observed = float(action.result.get("observed_gain", 1.0 if action.result.get("status") == "done" else 0.0))
            else:
                observed = 0.0
            ActionOutcome.objects.create(
                action=action, executor=action.executor, expected_gain=action.expected_gain, observed_gain=observed,
                success=action.state == A.DONE,
                features=features(executor=action.executor, expected_gain=action.expected_gain, risk=action.risk))
            recorded += 1
        scorer = scorer_train()
        provenance = _record_provenance(tenant, run, [a.idempotency_key for a in actions])
        _advance(run, Phase.DONE, started, outcomes=recorded, scorer_samples=scorer.samples, provenance=provenance)


def _record_provenance(tenant, run, action_keys: list[str]) -> str:
    """Record the run as activities in the provenance graph when that app offers a service for it."""
    try:
        from provenance import services
    except ImportError:
        return "unavailable"
    record = getattr(services, "activity_record", None)
    if record is None:
        return "unavailable"
    try:
        with transaction.atomic():
            record(tenant=tenant, kind="act", agent="autonomy", ref=f"autonomy-run:{run.pk}",
                   attributes={"actions": action_keys, "dry_run": run.dry_run})
    except Exception as exc:  # the graph's API is still being built; the run does not fail for it
        return f"failed: {exc!r}"[:200]
    return "recorded"


PHASES = {Phase.ANALYZE: _analyze, Phase.HYPOTHESIZE: _hypothesize, Phase.ACT: _act, Phase.LEARN: _learn}


# ---------------------------------------------------------------- approvals
def approval_decide(*, tenant, approval_id: int, decision: str, note: str = "", actor: str = "") -> Approval:
    """Approve or reject a pending approval of this tenant's schema; wakes the run."""
    if decision not in ("approve", "reject"):
        raise ValidationFailed("decision must be approve or reject.", details={"decision": decision})
    with transaction.atomic():
        approval = Approval.objects.select_for_update().select_related("action").filter(pk=approval_id).first()
        if approval is None:
            log.warning("approval %s not found in %s", approval_id, connection.schema_name)
            raise NotFound("No such approval.", details={"approval": approval_id})
        if approval.state != Approval.State.PENDING:
            raise Conflict("This approval was already answered.", details={"state": approval.state})
        approval.state = Approval.State.APPROVED if decision == "approve" else Approval.State.REJECTED
        approval.note, approval.decided_by, approval.decided_at = note[:1000], actor[:200], timezone.now()
        approval.save()
        action = approval.action
        action.state = A.APPROVED if decision == "approve" else A.REJECTED
        action.save(update_fields=["state"])
        _wake(action.run_id)
    return approval


def _wake(run_id: int) -> None:
    updated = ImprovementRun.objects.filter(pk=run_id, state=R.WAITING).update(state=R.RUNNING,
                                                                               heartbeat_at=timezone.now())
    if updated:
        _enqueue(ImprovementRun.objects.get(pk=run_id), Phase.ACT)


def approvals_expire(*, now=None) -> int:
    """Pending approvals past their deadline become `expired`; their action is not run."""
    now = now or timezone.now()
    count = 0
    for approval in Approval.objects.filter(state=Approval.State.PENDING, expires_at__lt=now).select_related("action"):
        with transaction.atomic():
            approval.state, approval.decided_at, approval.note = Approval.State.EXPIRED, now, "timed out"
            approval.save()
            CandidateAction.objects.filter(pk=approval.action_id, state=A.AWAITING).update(state=A.EXPIRED)
            _wake(approval.action.run_id)
        count += 1
    return count


# ---------------------------------------------------------------- recovery and dead letters
def runs_resume_stalled(*, stale_seconds: float = 120) -> list[int]:
    """Re-send the phase message of running runs that made no progress for `stale_seconds` (their
    message was lost with a killed worker). Duplicates are harmless: the phase checks the run."""
    cutoff = timezone.now() - timedelta(seconds=stale_seconds)
    resumed = []
    for run in ImprovementRun.objects.filter(state=R.RUNNING, heartbeat_at__lt=cutoff):
        _enqueue(run, run.phase)
        resumed.append(run.pk)
    tenant = connection.tenant
    transaction.on_commit(lambda: run_promote(tenant=tenant))
    return resumed


def dead_letter_requeue(*, letter_id: int) -> str:
    from .deadletter import dead_letter_requeue as requeue

    return requeue(letter=DeadLetter.objects.get(pk=letter_id))


def dead_letter_discard(*, letter_id: int) -> DeadLetter:
    from .deadletter import dead_letter_discard as discard

    return discard(letter=DeadLetter.objects.get(pk=letter_id))
