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

Redis slow is not Redis unreachable, and neither admits calls unchecked:

- **Slow** (a reply later than ``[admission] timeout_s``: a loaded Redis, or a loaded
  instance that did not read the reply in time): the acquire is *refused* (the route's
  fallback chain or ``on_unavailable`` answers), and since the script may still have run on
  Redis, the attempt is *voided*: a second script removes the slot if the first added it and
  leaves a short-lived tombstone for that attempt, so a first script that runs after the
  second adds nothing. A slot the call already held (a renewal) is not voided.
- **Unreachable** (connection refused or reset, no such socket): slots are counted in this
  process instead, at most ``[admission] unreachable_max_sessions`` per provider (default:
  the provider's own ``max_sessions``, i.e. the limit holds per instance rather than per
  fleet), logged once when Redis goes and once when it comes back, and counted as
  ``voicebot_errors_total{code="admission-store"}``. A Redis outage does not take the phone
  line down, and does not lift the limits either.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from voicebot.calls.admission import InProcessSlotStore, SlotStore
from voicebot.config import AdmissionConfig
from voicebot.telemetry.metrics import record_error

log = logging.getLogger(__name__)

# KEYS[1] = set, KEYS[2] = this attempt's tombstone; ARGV = call_sid, limit (-1 = unlimited),
# ttl_ms. Returns 1 taken/renewed, 0 full (or the attempt was voided before it ran).
_ACQUIRE = """
if redis.call('EXISTS', KEYS[2]) == 1 then
  return 0
end
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

# KEYS[1] = set, KEYS[2] = the attempt's tombstone; ARGV = call_sid, tombstone ttl_ms. Undoes
# an acquire whose reply never came, whether it ran already (ZREM) or runs later (tombstone).
_VOID = """
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], '1', 'PX', ARGV[2])
return 1
"""

# A voided attempt's tombstone outlives any plausible delivery of its acquire script.
TOMBSTONE_TTL_S = 60.0

# KEYS[1] = set. Live slots (read-only: counts members whose expiry is in the future).
_COUNT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf')
"""


class RedisSlotStore:
    shared = True

    def __init__(
        self,
        client: aioredis.Redis,
        prefix: str = "voicebot:slots",
        *,
        timeout_s: float = 2.0,
        unreachable_max_sessions: int | None = None,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.timeout_s = timeout_s
        self.unreachable_max_sessions = unreachable_max_sessions
        self._acquire = client.register_script(_ACQUIRE)
        self._refresh = client.register_script(_REFRESH)
        self._void = client.register_script(_VOID)
        self._count = client.register_script(_COUNT)
        # (provider, call_sid) this instance took and has not released: a timed-out acquire of
        # one of these was a renewal, and voiding it would free a live call's slot.
        self._held: set[tuple[str, str]] = set()
        # While Redis is unreachable, slots are counted here (see the module docstring).
        self.local = InProcessSlotStore()
        self.unreachable = False
        self._voids: set[asyncio.Task[None]] = set()

    @classmethod
    def from_url(cls, url: str, prefix: str = "voicebot:slots", **options: Any) -> RedisSlotStore:
        timeout_s = options.get("timeout_s", 2.0)
        client = aioredis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, health_check_interval=30
        )
        return cls(client, prefix, **options)

    def key(self, provider: str) -> str:
        return f"{self.prefix}:{provider}"

    def _went_down(self, what: str, provider: str, call_sid: str, exc: Exception) -> None:
        record_error("admission-store", provider)
        if not self.unreachable:
            self.unreachable = True
            cap = self.unreachable_max_sessions
            log.error(
                "call %s: Redis slot store unreachable (%s on %s: %r); counting slots on this instance "
                "(at most %s per provider) until it is back",
                call_sid,
                what,
                provider,
                exc,
                cap if cap is not None else "max_sessions",
            )

    def _came_back(self) -> None:
        if self.unreachable:
            self.unreachable = False
            log.warning("Redis slot store reachable again: slots are counted fleet-wide again")

    async def acquire(self, provider: str, call_sid: str, limit: int | None, ttl_s: float) -> bool:
        attempt = secrets.token_hex(8)
        tombstone = f"{self.key(provider)}:void:{attempt}"
        args: list[Any] = [call_sid, -1 if limit is None else limit, _ms(ttl_s)]
        try:
            async with asyncio.timeout(self.timeout_s):
                taken = bool(await self._acquire(keys=[self.key(provider), tombstone], args=args))
        except (TimeoutError, RedisTimeoutError) as exc:
            record_error("admission-store", provider)
            renewal = (provider, call_sid) in self._held
            log.error(
                "call %s: Redis slot store did not answer an acquire on %s within %.1f s (%r); refused%s",
                call_sid,
                provider,
                self.timeout_s,
                exc,
                "" if renewal else ", and the attempt is voided",
            )
            if not renewal:
                self._spawn_void(provider, call_sid, tombstone)
            return False
        except RedisError as exc:
            self._went_down("acquire", provider, call_sid, exc)
            cap = self.unreachable_max_sessions
            local_limit = cap if limit is None else (limit if cap is None else min(limit, cap))
            return await self.local.acquire(provider, call_sid, local_limit, ttl_s)
        self._came_back()
        if taken:
            self._held.add((provider, call_sid))
        return taken

    def _spawn_void(self, provider: str, call_sid: str, tombstone: str) -> None:
        task = asyncio.ensure_future(self._void_attempt(provider, call_sid, tombstone))
        self._voids.add(task)
        task.add_done_callback(self._voids.discard)

    async def _void_attempt(self, provider: str, call_sid: str, tombstone: str) -> None:
        """Retry the void until Redis answers: until then the slot may be held for nobody
        (it lapses after its TTL at the latest, and so does the tombstone)."""
        for delay in (0.0, 0.5, 1.0, 2.0, 4.0):
            await asyncio.sleep(delay)
            try:
                await self._void(keys=[self.key(provider), tombstone], args=[call_sid, _ms(TOMBSTONE_TTL_S)])
                return
            except RedisError as exc:
                log.warning("call %s: voiding a timed-out slot acquire on %s failed (%r)", call_sid, provider, exc)

    async def settle(self) -> None:
        """Wait for pending voids (tests, shutdown)."""
        await asyncio.gather(*self._voids, return_exceptions=True)

    async def refresh(self, provider: str, call_sid: str, ttl_s: float) -> bool:
        if await self.local.refresh(provider, call_sid, ttl_s):
            return True  # taken while Redis was unreachable; it stays counted here
        try:
            renewed = bool(await self._refresh(keys=[self.key(provider)], args=[call_sid, _ms(ttl_s)]))
        except RedisError as exc:
            log.warning("call %s: Redis slot refresh on %s failed (%r); presumed held", call_sid, provider, exc)
            record_error("admission-store", provider)
            return True  # the next heartbeat tries again
        self._came_back()
        return renewed

    async def release(self, provider: str, call_sid: str) -> None:
        self._held.discard((provider, call_sid))
        await self.local.release(provider, call_sid)
        try:
            await self.client.zrem(self.key(provider), call_sid)
        except RedisError as exc:  # the slot lapses after its TTL anyway
            log.warning("call %s: Redis slot release on %s failed (%r); it expires by itself", call_sid, provider, exc)

    async def count(self, provider: str) -> int:
        local = await self.local.count(provider)
        try:
            return local + int(await self._count(keys=[self.key(provider)]))
        except RedisError as exc:
            log.warning("Redis slot count for %s failed: %r", provider, exc)
            return local

    async def aclose(self) -> None:
        await self.settle()
        await self.client.aclose()


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def slot_store(config: AdmissionConfig) -> SlotStore:
    """The store ``[admission] store`` names; chosen once at startup (a config reload keeps
    the store the process started with, since slots held in it belong to live calls)."""
    if config.store == "redis":
        log.info("admission: provider slots counted fleet-wide in Redis (%s)", _redact(config.redis_url))
        return RedisSlotStore.from_url(
            config.redis_url,
            config.key_prefix,
            timeout_s=config.timeout_s,
            unreachable_max_sessions=config.unreachable_max_sessions,
        )
    return InProcessSlotStore()


def _redact(url: str) -> str:
    """The Redis URL without its password, for logs."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        rest = "***@" + rest.rsplit("@", 1)[1]
    return scheme + sep + rest
