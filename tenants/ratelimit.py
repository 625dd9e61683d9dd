"""GCRA rate limiting in Redis: one atomic script checks the tenant and the key limits together."""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import redis
from django.conf import settings

# KEYS: tenant bucket, key bucket. ARGV: per bucket (emission interval ms, burst tolerance ms).
# The clock is Redis's own, read inside the script: a request delayed between two round trips is
# never judged against a stale time. Returns {allowed, remaining, retry_after ms, reset_after ms}.
GCRA_SCRIPT = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local results = {}
local allowed = 1
local retry_after = 0
for i = 1, 2 do
  local interval = tonumber(ARGV[i * 2 - 1])
  local tolerance = tonumber(ARGV[i * 2])
  local tat = tonumber(redis.call('GET', KEYS[i]) or now)
  if tat < now then tat = now end
  local new_tat = tat + interval
  local allow_at = new_tat - tolerance - interval
  if now < allow_at then
    allowed = 0
    retry_after = math.max(retry_after, allow_at - now)
  end
  results[i] = {tat, new_tat, interval, tolerance}
end
local remaining = 1e18
local reset_after = 0
for i = 1, 2 do
  local tat, new_tat, interval, tolerance = unpack(results[i])
  local used = allowed == 1 and new_tat or tat
  if allowed == 1 then
    redis.call('SET', KEYS[i], new_tat, 'PX', math.ceil(new_tat - now + tolerance + interval))
  end
  local left = math.floor((now + tolerance + interval - used) / interval)
  if left < remaining then remaining = left end
  if used - now > reset_after then reset_after = used - now end
end
if remaining < 0 then remaining = 0 end
return {allowed, remaining, math.ceil(retry_after), math.ceil(reset_after)}
"""


@dataclass(frozen=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    retry_after: int  # seconds, rounded up
    reset_after: int  # seconds until the buckets are full again


@functools.cache
def _client() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2)


@functools.cache
def _script():
    return _client().register_script(GCRA_SCRIPT)


def _bucket(per_minute: int, burst: int) -> tuple[float, float]:
    interval = 60_000.0 / max(per_minute, 1)
    return interval, interval * max(burst, 0)


def check(*, tenant_key: str, key_key: str, tenant_rate: int, key_rate: int, burst: int) -> Decision:
    t_interval, t_tolerance = _bucket(tenant_rate, burst)
    k_interval, k_tolerance = _bucket(key_rate, burst)
    allowed, remaining, retry_ms, reset_ms = _script()(
        keys=[f"rl:t:{tenant_key}", f"rl:k:{key_key}"],
        args=[t_interval, t_tolerance, k_interval, k_tolerance],
    )
    return Decision(
        allowed=bool(allowed),
        limit=min(tenant_rate, key_rate),
        remaining=int(remaining),
        retry_after=max(1, math.ceil(retry_ms / 1000)) if not allowed else 0,
        reset_after=math.ceil(reset_ms / 1000),
    )
