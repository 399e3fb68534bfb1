"""Fleet-wide ``max_sessions``: provider session slots counted in Redis.

Implements the slot-store contract of :mod:`voicebot.calls.admission` (``acquire``, ``refresh``,
``release``, ``count``) so every instance behind the same Twilio number shares one limit per
provider. Enabled with ``[admission] store = "redis"``; off by default (in-process slots).

Layout: one sorted set per provider, ``{prefix}:{provider}``; member = CallSid, score = the
slot's expiry in Redis server milliseconds. Each operation is one Lua script, so "count the
live slots, then take one" is atomic across the fleet, and all expiry decisions use the
Redis server's clock (``TIME``), never an instance's, so clock skew between pods cannot
free or keep a slot. Holders refresh their slot (``SlotLease`` heartbeats every third of
the TTL); an instance that crashes stops refreshing and its slots lapse after the TTL,
pruned by the next script that touches the set. The set itself carries a key TTL too, so
a provider nobody calls any more leaves nothing behind.

Redis unreachable: the store fails OPEN (the call is admitted, an error is logged and
counted as ``voicebot_errors_total{code="admission-store"}``). A Redis outage must not take
the phone line down; the providers' own limits and the resilience layer still apply.
"""

from __future__ import annotations

import logging
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from voicebot.calls.admission import InProcessSlotStore, SlotStore
from voicebot.config import AdmissionConfig
from voicebot.telemetry.metrics import record_error

log = logging.getLogger(__name__)

# KEYS[1] = set; ARGV = call_sid, limit (-1 = unlimited), ttl_ms. Returns 1 taken/renewed, 0 full.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  local limit = tonumber(ARGV[2])
  if limit >= 0 and redis.call('ZCARD', KEYS[1]) >= limit then
    return 0
  end
end
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
if redis.call('PTTL', KEYS[1]) < ttl then
  redis.call('PEXPIRE', KEYS[1], ttl)
end
return 1
"""

# KEYS[1] = set; ARGV = call_sid, ttl_ms. Returns 1 renewed, 0 the slot is gone.
_REFRESH = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  return 0
end
redis.call('ZADD', KEYS[1], 'XX', now + ttl, ARGV[1])
if redis.call('PTTL', KEYS[1]) < ttl then
  redis.call('PEXPIRE', KEYS[1], ttl)
end
return 1
"""

# KEYS[1] = set. Live slots (read-only: counts members whose expiry is in the future).
_COUNT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf')
"""

CLIENT_TIMEOUT_S = 0.5  # a webhook waits at most about this long on Redis


class RedisSlotStore:
    shared = True

    def __init__(self, client: aioredis.Redis, prefix: str = "voicebot:slots") -> None:
        self.client = client
        self.prefix = prefix
        self._acquire = client.register_script(_ACQUIRE)
        self._refresh = client.register_script(_REFRESH)
        self._count = client.register_script(_COUNT)

    @classmethod
    def from_url(cls, url: str, prefix: str = "voicebot:slots") -> RedisSlotStore:
        client = aioredis.Redis.from_url(
            url, socket_timeout=CLIENT_TIMEOUT_S, socket_connect_timeout=CLIENT_TIMEOUT_S, health_check_interval=30
        )
        return cls(client, prefix)

    def key(self, provider: str) -> str:
        return f"{self.prefix}:{provider}"

    def _store_failed(self, what: str, provider: str, call_sid: str, exc: Exception) -> None:
        log.error("call %s: Redis slot store %s on %s failed (%r); admitting anyway", call_sid, what, provider, exc)
        record_error("admission-store", provider)

    async def acquire(self, provider: str, call_sid: str, limit: int | None, ttl_s: float) -> bool:
        args: list[Any] = [call_sid, -1 if limit is None else limit, _ms(ttl_s)]
        try:
            return bool(await self._acquire(keys=[self.key(provider)], args=args))
        except RedisError as exc:
            self._store_failed("acquire", provider, call_sid, exc)
            return True

    async def refresh(self, provider: str, call_sid: str, ttl_s: float) -> bool:
        try:
            return bool(await self._refresh(keys=[self.key(provider)], args=[call_sid, _ms(ttl_s)]))
        except RedisError as exc:
            self._store_failed("refresh", provider, call_sid, exc)
            return True  # the slot is presumed held; the next heartbeat tries again

    async def release(self, provider: str, call_sid: str) -> None:
        try:
            await self.client.zrem(self.key(provider), call_sid)
        except RedisError as exc:  # the slot lapses after its TTL anyway
            log.warning("call %s: Redis slot release on %s failed (%r); it expires by itself", call_sid, provider, exc)

    async def count(self, provider: str) -> int:
        try:
            return int(await self._count(keys=[self.key(provider)]))
        except RedisError as exc:
            log.warning("Redis slot count for %s failed: %r", provider, exc)
            return 0

    async def aclose(self) -> None:
        await self.client.aclose()


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def slot_store(config: AdmissionConfig) -> SlotStore:
    """The store ``[admission] store`` names; chosen once at startup (a config reload keeps
    the store the process started with, since slots held in it belong to live calls)."""
    if config.store == "redis":
        log.info("admission: provider slots counted fleet-wide in Redis (%s)", _redact(config.redis_url))
        return RedisSlotStore.from_url(config.redis_url, config.key_prefix)
    return InProcessSlotStore()


def _redact(url: str) -> str:
    """The Redis URL without its password, for logs."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        rest = "***@" + rest.rsplit("@", 1)[1]
    return scheme + sep + rest
