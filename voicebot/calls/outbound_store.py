"""Where outbound calls are remembered between Twilio's callbacks: this process, or the Redis
the fleet already shares for provider slots (``[admission] store = "redis"``).

On a fleet, Twilio's callbacks for a call (answer, status, AMD) and ``GET /calls/{sid}`` reach
whichever instance the load balancer picks, not the one that placed the call; so the call's
state lives in the shared store, and each change is one atomic step there:

- :meth:`name`: the CallSid Twilio gave the call; a callback naming another CallSid is not
  this call's.
- :meth:`advance`: a status; the first final one (completed, busy, ...) wins, later ones
  change nothing.
- :meth:`answer`: Twilio fetched the answer, the call's stream now holds the slot.
- :meth:`verdict`: the AMD verdict, once per call, and :meth:`wait_verdict` wakes the
  instance whose media stream holds the greeting for it (Redis pub/sub on a fleet).

Redis layout: one hash per call, ``{prefix}:outbound:{key}`` (``key`` is our ``OB…`` id),
``{prefix}:outbound-sid:{CallSid}`` naming it, and the channel ``{prefix}:outbound-verdict:{key}``;
both keys expire :data:`RECORD_TTL_S` after the call was placed.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Protocol

import redis.asyncio as aioredis

from voicebot.calls.admission import SlotStore
from voicebot.calls.admission_redis import RedisSlotStore
from voicebot.config import AdmissionConfig

# CallStatus values of a call that was never answered, and of a call that is over
# (https://www.twilio.com/docs/voice/api/call-resource#call-status-values).
UNANSWERED = frozenset({"busy", "no-answer", "failed", "canceled"})
FINAL = UNANSWERED | {"completed"}
# AnsweredBy values that are not a person (https://www.twilio.com/docs/voice/answering-machine-detection).
MACHINE = frozenset({"machine_start", "machine_end_beep", "machine_end_silence", "machine_end_other", "fax"})
# How long a placed call is remembered (GET /calls/{sid}, a campaign's results).
RECORD_TTL_S = 24 * 3600.0
# Calls remembered by the in-process store; the oldest go first.
REMEMBERED = 10_000


@dataclass(slots=True)
class OutboundRecord:
    key: str  # our id (OB…), in every callback URL; the ringing call's slot is held under it
    route: str
    to: str
    from_: str
    provider: str  # where the slot was reserved
    ring_deadline: float  # time.time() after which an unanswered call with no final status is lost
    variables: dict[str, str] = field(default_factory=dict)
    call_sid: str | None = None
    status: str = "queued"
    answered_by: str | None = None
    duration_s: int | None = None  # CallDuration of the final status callback
    answered: bool = False  # Twilio fetched the answer: a plan (then the stream) holds the slot
    tape: str | None = None  # the call's tape, once its stream is recorded
    created_at: float = field(default_factory=time.time)

    @property
    def machine(self) -> bool:
        return self.answered_by in MACHINE

    def current_status(self, now: float | None = None) -> str:
        """``status``, or ``unknown`` for a call that neither answered nor ended by its ring
        deadline (Twilio's callbacks never came; its slot has lapsed)."""
        late = (now or time.time()) > self.ring_deadline
        return "unknown" if late and not self.answered and self.status not in FINAL else self.status

    def row(self) -> dict[str, Any]:
        return {
            "call_sid": self.call_sid,
            "direction": "outbound",
            "route": self.route,
            "to": self.to,
            "from": self.from_,
            "status": self.current_status(),
            "answered_by": self.answered_by,
            "provider": self.provider,
            "duration_s": self.duration_s,
            "tape": self.tape,
        }

    def to_hash(self) -> dict[str, str]:
        """Redis hash fields; a field that is None is left out."""
        out: dict[str, str] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            if f.name == "variables":
                out[f.name] = json.dumps(value)
            elif isinstance(value, bool):
                out[f.name] = "1" if value else ""
            else:
                out[f.name] = str(value)
        return out

    @classmethod
    def from_hash(cls, raw: Mapping[bytes | str, bytes | str]) -> OutboundRecord:
        h = {_text(k): _text(v) for k, v in raw.items()}
        return cls(
            key=h["key"],
            route=h["route"],
            to=h["to"],
            from_=h["from_"],
            provider=h["provider"],
            ring_deadline=float(h["ring_deadline"]),
            variables=json.loads(h.get("variables", "{}")),
            call_sid=h.get("call_sid") or None,
            status=h.get("status", "queued"),
            answered_by=h.get("answered_by") or None,
            duration_s=int(h["duration_s"]) if h.get("duration_s", "").isdigit() else None,
            answered=bool(h.get("answered")),
            tape=h.get("tape") or None,
            created_at=float(h.get("created_at", "0")),
        )


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class OutboundStore(Protocol):
    shared: bool  # other instances see the same calls

    async def create(self, record: OutboundRecord) -> None: ...

    async def get(self, key: str) -> OutboundRecord | None: ...

    async def find(self, call_sid: str) -> OutboundRecord | None:
        """The call Twilio named ``call_sid``."""
        ...

    async def name(self, key: str, call_sid: str) -> OutboundRecord | None:
        """Twilio's name for the call; None when there is no such call, or it has another name."""
        ...

    async def advance(self, key: str, status: str, duration_s: int | None) -> tuple[bool, OutboundRecord | None]:
        """A status callback; (False, record) when the call had already ended."""
        ...

    async def answer(self, key: str) -> None: ...

    async def verdict(self, key: str, answered_by: str) -> tuple[bool, OutboundRecord | None]:
        """The AMD verdict; (False, record) when the call already had one."""
        ...

    async def wait_verdict(self, key: str, timeout_s: float) -> str | None:
        """The call's ``AnsweredBy`` once known, or None after ``timeout_s``."""
        ...

    async def set_tape(self, key: str, path: str) -> None: ...


class InProcessOutboundStore:
    """The calls this process placed; enough for one instance."""

    shared = False

    def __init__(self, remembered: int = REMEMBERED) -> None:
        self._by_key: OrderedDict[str, OutboundRecord] = OrderedDict()
        self._by_sid: dict[str, str] = {}
        self._verdicts: dict[str, asyncio.Event] = {}
        self._remembered = remembered

    async def create(self, record: OutboundRecord) -> None:
        self._by_key[record.key] = record
        while len(self._by_key) > self._remembered:
            _, old = self._by_key.popitem(last=False)
            self._verdicts.pop(old.key, None)
            if old.call_sid is not None:
                self._by_sid.pop(old.call_sid, None)

    async def get(self, key: str) -> OutboundRecord | None:
        return self._by_key.get(key)

    async def find(self, call_sid: str) -> OutboundRecord | None:
        key = self._by_sid.get(call_sid)
        return None if key is None else self._by_key.get(key)

    async def name(self, key: str, call_sid: str) -> OutboundRecord | None:
        record = self._by_key.get(key)
        if record is None or record.call_sid not in (None, call_sid):
            return None
        record.call_sid = call_sid
        self._by_sid[call_sid] = key
        return record

    async def advance(self, key: str, status: str, duration_s: int | None) -> tuple[bool, OutboundRecord | None]:
        record = self._by_key.get(key)
        if record is None or record.status in FINAL:
            return False, record
        record.status = status
        if duration_s is not None:
            record.duration_s = duration_s
        return True, record

    async def answer(self, key: str) -> None:
        record = self._by_key.get(key)
        if record is not None:
            record.answered = True
            if record.status not in FINAL:
                record.status = "in-progress"

    async def verdict(self, key: str, answered_by: str) -> tuple[bool, OutboundRecord | None]:
        record = self._by_key.get(key)
        if record is None or record.answered_by is not None:
            return False, record
        record.answered_by = answered_by
        self._verdicts.setdefault(key, asyncio.Event()).set()
        return True, record

    async def wait_verdict(self, key: str, timeout_s: float) -> str | None:
        record = self._by_key.get(key)
        if record is None:
            return None
        if record.answered_by is None:
            try:
                await asyncio.wait_for(self._verdicts.setdefault(key, asyncio.Event()).wait(), timeout_s)
            except TimeoutError:
                return None
        return record.answered_by

    async def set_tape(self, key: str, path: str) -> None:
        record = self._by_key.get(key)
        if record is not None:
            record.tape = path


# KEYS[1] = record, KEYS[2] = CallSid index; ARGV = call_sid, ttl_ms, key.
# Returns {1, fields} named, {0, fields} named otherwise, {0, {}} no such call.
_NAME = """
local cur = redis.call('HGET', KEYS[1], 'call_sid')
if redis.call('EXISTS', KEYS[1]) == 0 or (cur and cur ~= ARGV[1]) then
  return {0, redis.call('HGETALL', KEYS[1])}
end
redis.call('HSET', KEYS[1], 'call_sid', ARGV[1])
redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[2])
return {1, redis.call('HGETALL', KEYS[1])}
"""

# KEYS[1] = record; ARGV = status, duration ('' for none), then the final statuses.
# Returns {1, fields} changed, {0, fields} the call had already ended (or no such call).
_ADVANCE = """
local cur = redis.call('HGET', KEYS[1], 'status')
if not cur then
  return {0, {}}
end
for i = 3, #ARGV do
  if cur == ARGV[i] then
    return {0, redis.call('HGETALL', KEYS[1])}
  end
end
redis.call('HSET', KEYS[1], 'status', ARGV[1])
if ARGV[2] ~= '' then
  redis.call('HSET', KEYS[1], 'duration_s', ARGV[2])
end
return {1, redis.call('HGETALL', KEYS[1])}
"""

# KEYS[1] = record; ARGV = the final statuses.
_ANSWER = """
local cur = redis.call('HGET', KEYS[1], 'status')
if not cur then
  return 0
end
redis.call('HSET', KEYS[1], 'answered', '1')
for i = 1, #ARGV do
  if cur == ARGV[i] then
    return 1
  end
end
redis.call('HSET', KEYS[1], 'status', 'in-progress')
return 1
"""

# KEYS[1] = record; ARGV = path.
_SET_TAPE = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HSET', KEYS[1], 'tape', ARGV[1])
end
return 1
"""

# KEYS[1] = record; ARGV = answered_by, channel. Returns {1, fields} first verdict.
_VERDICT = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {0, {}}
end
if redis.call('HSETNX', KEYS[1], 'answered_by', ARGV[1]) == 0 then
  return {0, redis.call('HGETALL', KEYS[1])}
end
redis.call('PUBLISH', ARGV[2], ARGV[1])
return {1, redis.call('HGETALL', KEYS[1])}
"""


class RedisOutboundStore:
    """Outbound calls in the Redis the fleet shares (the slot store's client)."""

    shared = True

    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        self.client = client
        self.prefix = prefix
        self._name = client.register_script(_NAME)
        self._advance = client.register_script(_ADVANCE)
        self._answer = client.register_script(_ANSWER)
        self._verdict = client.register_script(_VERDICT)
        self._set_tape = client.register_script(_SET_TAPE)

    def _key(self, key: str) -> str:
        return f"{self.prefix}:outbound:{key}"

    def _sid(self, call_sid: str) -> str:
        return f"{self.prefix}:outbound-sid:{call_sid}"

    def channel(self, key: str) -> str:
        return f"{self.prefix}:outbound-verdict:{key}"

    @staticmethod
    def _record(flat: list[Any]) -> OutboundRecord | None:
        if not flat:
            return None
        return OutboundRecord.from_hash(dict(zip(flat[::2], flat[1::2], strict=True)))

    async def create(self, record: OutboundRecord) -> None:
        name = self._key(record.key)
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.hset(name, mapping=record.to_hash())  # type: ignore[arg-type]
            pipe.pexpire(name, _ms(RECORD_TTL_S))
            await pipe.execute()

    async def get(self, key: str) -> OutboundRecord | None:
        raw = await self.client.hgetall(self._key(key))
        return OutboundRecord.from_hash(raw) if raw else None

    async def find(self, call_sid: str) -> OutboundRecord | None:
        key = await self.client.get(self._sid(call_sid))
        return None if key is None else await self.get(_text(key))

    async def name(self, key: str, call_sid: str) -> OutboundRecord | None:
        ttl_ms = max(1, await self.client.pttl(self._key(key)))
        named, flat = await self._name(keys=[self._key(key), self._sid(call_sid)], args=[call_sid, ttl_ms, key])
        return self._record(flat) if named else None

    async def advance(self, key: str, status: str, duration_s: int | None) -> tuple[bool, OutboundRecord | None]:
        args = [status, "" if duration_s is None else duration_s, *sorted(FINAL)]
        changed, flat = await self._advance(keys=[self._key(key)], args=args)
        return bool(changed), self._record(flat)

    async def answer(self, key: str) -> None:
        await self._answer(keys=[self._key(key)], args=sorted(FINAL))

    async def verdict(self, key: str, answered_by: str) -> tuple[bool, OutboundRecord | None]:
        first, flat = await self._verdict(keys=[self._key(key)], args=[answered_by, self.channel(key)])
        return bool(first), self._record(flat)

    async def wait_verdict(self, key: str, timeout_s: float) -> str | None:
        """Subscribed before reading the record, so a verdict published in between is not missed."""
        pubsub = self.client.pubsub()
        try:
            await pubsub.subscribe(self.channel(key))
            known = await self.client.hget(self._key(key), "answered_by")
            if known:
                return _text(known)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout_s
            while (left := deadline - loop.time()) > 0:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=left)
                if message is not None and message.get("type") == "message":
                    return _text(message["data"])
            return None
        finally:
            await pubsub.aclose()

    async def set_tape(self, key: str, path: str) -> None:
        await self._set_tape(keys=[self._key(key)], args=[path])


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def outbound_store(slots: SlotStore, config: AdmissionConfig) -> OutboundStore:
    """In Redis beside the slots when the fleet shares them there, else in this process."""
    if isinstance(slots, RedisSlotStore):
        return RedisOutboundStore(slots.client, config.key_prefix)
    return InProcessOutboundStore()
