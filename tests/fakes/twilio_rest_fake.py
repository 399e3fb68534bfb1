"""A local fake of the Twilio REST API's Call create and update, for the real ``twilio`` client.

``POST /2010-04-01/Accounts/{AccountSid}/Calls.json`` creates a call (``To``, ``From``,
``Url``, ``StatusCallback``, ``MachineDetection``, ``AsyncAmd``, …) and answers 201 with a
queued Call resource; the created call is recorded (:class:`CreatedCall`). Twilio's side of
the call's life is then driven by the test, signed with the account's auth token as Twilio
signs: :meth:`TwilioRestFake.status` (``ringing``, ``in-progress``, ``no-answer``, …),
:meth:`TwilioRestFake.answer` (fetches the call's ``Url``; its TwiML is returned, and the test
opens the media stream it names with ``voicebot.devtools.twilio_sim``) and
:meth:`TwilioRestFake.amd` (the ``AsyncAmdStatusCallback`` with ``AnsweredBy``).

``POST /2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json`` with HTTP basic auth
(AccountSid:AuthToken) and a form body (``Twiml``, ``Url``, ``Status``, …), as the client
sends it. Like Twilio it answers 401 with a Twilio error body when the credentials are
wrong, 404 for an unknown account, and 200 with a Call resource otherwise. Each accepted
update is recorded with the time it arrived (``time.monotonic()``) so tests can place it
on the simulated call's timeline. ``fail_status`` makes it refuse every update. An update
with ``Twiml`` for a call whose media stream the test runs on the Twilio simulator
(:meth:`TwilioRestFake.connect`) is then played to it as Twilio would
(:meth:`voicebot.devtools.twilio_sim.SimulatedCall.run_twiml`: the stream ends, the callee
hears the ``<Say>``/``<Play>``).

Legs and conferences: the fake also follows every call through the TwiML it is given
(``Twiml`` at create, once the test answers it with :meth:`TwilioRestFake.answer_leg`;
``Twiml`` of an update, at once) for the verbs a transfer uses: ``<Say>`` is heard by that leg
only (kept in its :class:`Leg`), ``<Dial><Conference>`` puts the leg in the named conference
(created on first join, ``CF…``) and, when the noun asks for ``statusCallbackEvent="join"``,
POSTs ``participant-join`` to its ``statusCallback``, signed
(https://www.twilio.com/docs/voice/twiml/conference#attributes-statusCallbackEvent). An update
with ``Status=completed``/``canceled`` ends the leg and takes it out of its conference.
``GET …/Conferences.json`` (``FriendlyName``, ``Status``) and
``GET …/Conferences/{Sid}/Participants.json`` list them as Twilio's list pages
(https://www.twilio.com/docs/voice/api/conference-participant-resource), for the ``twilio`` client.

The client is pointed here by ``[twilio] api_base_url`` (``client.api.base_url``).

:func:`loopback_server` runs any ASGI app on an ephemeral 127.0.0.1 port in the current
event loop; tests use it for local agents and tool endpoints too.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import secrets
import time
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp
from twilio.request_validator import RequestValidator

from voicebot.devtools.twilio_sim import SimulatedCall


@contextlib.asynccontextmanager
async def loopback_server(app: ASGIApp) -> AsyncIterator[str]:
    """Serve ``app`` on 127.0.0.1:<ephemeral>; yields its base URL."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("loopback server did not start")
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


@dataclass
class CallUpdate:
    at: float  # time.monotonic() when the request arrived
    account_sid: str
    call_sid: str
    params: dict[str, str]


@dataclass
class CreatedCall:
    at: float  # time.monotonic() when the request arrived
    sid: str
    params: dict[str, str]  # the form as sent (a repeated field keeps its last value)
    status_events: list[str]  # every StatusCallbackEvent


@dataclass
class Leg:
    """One call as the fake runs its TwiML: what it was told (``<Say>``) and where it is."""

    sid: str
    heard: list[str] = field(default_factory=list)
    conference: str | None = None  # friendly name of the conference it is in
    ended: bool = False


@dataclass
class Conference:
    sid: str
    name: str
    participants: list[str] = field(default_factory=list)  # CallSids, in order of joining
    status: str = "in-progress"


def _error(status: int, code: int, message: str) -> JSONResponse:
    return JSONResponse(
        {"code": code, "message": message, "more_info": f"https://www.twilio.com/docs/errors/{code}", "status": status},
        status_code=status,
    )


@dataclass
class TwilioRestFake:
    account_sid: str = "AC" + "1" * 32
    auth_token: str = "rest-fake-token"
    fail_status: int | None = None
    updates: list[CallUpdate] = field(default_factory=list)
    created: list[CreatedCall] = field(default_factory=list)
    _created: asyncio.Event = field(default_factory=asyncio.Event)
    rejected: list[str] = field(default_factory=list)  # why each refused request was refused
    base_url: str = ""
    _updated: asyncio.Event = field(default_factory=asyncio.Event)
    simulated: dict[str, SimulatedCall] = field(default_factory=dict)  # by CallSid (connect)
    # A load balancer in front of a fleet: each callback goes to the next of these base URLs
    # (http://host:port) in turn, unless the test names one (``via``); empty: to the URL as given.
    instances: list[str] = field(default_factory=list)
    _turn: int = 0
    _runs: set[asyncio.Task[object]] = field(default_factory=set)
    _stack: contextlib.AsyncExitStack = field(default_factory=contextlib.AsyncExitStack)
    legs: dict[str, Leg] = field(default_factory=dict)
    conferences: dict[str, Conference] = field(default_factory=dict)  # by friendly name
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def leg(self, sid: str) -> Leg:
        return self.legs.setdefault(sid, Leg(sid))

    async def until(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        """Wait until ``predicate()`` holds; looked at after every change to legs and conferences."""
        async with asyncio.timeout(timeout):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

    def _in_background(self, coro: Coroutine[Any, Any, object]) -> None:
        """Twilio acts on an update after it has answered it."""
        run = asyncio.create_task(coro)
        self._runs.add(run)
        run.add_done_callback(self._runs.discard)

    async def _run_twiml(self, sid: str, twiml: str) -> None:
        leg = self.leg(sid)
        for verb in ET.fromstring(twiml):
            if verb.tag == "Say":
                leg.heard.append((verb.text or "").strip())
            elif verb.tag == "Dial" and (noun := verb.find("Conference")) is not None:
                await self._join(leg, noun)
            elif verb.tag == "Hangup":
                self._end(leg)
            self._changed.set()

    async def _join(self, leg: Leg, noun: ET.Element) -> None:
        name = (noun.text or "").strip()
        conference = self.conferences.get(name)
        if conference is None or conference.status == "completed":
            conference = self.conferences[name] = Conference("CF" + secrets.token_hex(16), name)
        conference.participants.append(leg.sid)
        leg.conference = name
        self._changed.set()
        callback = noun.get("statusCallback")
        if callback and "join" in (noun.get("statusCallbackEvent") or "").split():
            params = {
                "ConferenceSid": conference.sid,
                "FriendlyName": name,
                "AccountSid": self.account_sid,
                "StatusCallbackEvent": "participant-join",
                "CallSid": leg.sid,
                "Muted": "false",
                "Hold": "false",
                "Coaching": "false",
                "StartConferenceOnEnter": noun.get("startConferenceOnEnter", "true"),
                "EndConferenceOnExit": noun.get("endConferenceOnExit", "false"),
                "SequenceNumber": str(len(conference.participants)),
            }
            await self._callback(callback, params)

    def _end(self, leg: Leg) -> None:
        leg.ended = True
        if leg.conference is not None:
            conference = self.conferences[leg.conference]
            conference.participants.remove(leg.sid)
            leg.conference = None
            if not conference.participants:
                conference.status = "completed"
        self._changed.set()

    async def answer_leg(self, call: CreatedCall) -> None:
        """The callee of a call created with ``Twiml`` picked up: the TwiML runs, callbacks
        included, before this returns."""
        await self._run_twiml(call.sid, call.params["Twiml"])

    def _authorized(self, request: Request) -> bool:
        header = request.headers.get("authorization", "")
        if not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            return False
        return user == self.account_sid and password == self.auth_token

    async def _update_call(self, request: Request) -> JSONResponse:
        account, call = request.path_params["account"], request.path_params["call"]
        if not self._authorized(request):
            self.rejected.append("auth")
            return _error(401, 20003, "Authenticate")
        if account != self.account_sid:
            self.rejected.append("account")
            return _error(404, 20404, f"The requested resource /2010-04-01/Accounts/{account}.json was not found")
        params = {k: str(v) for k, v in (await request.form()).items()}
        if self.fail_status is not None:
            self.rejected.append(f"fail_status {self.fail_status}")
            return _error(self.fail_status, 20500, "Internal Server Error")
        if not params.get("Twiml") and not params.get("Url") and not params.get("Status"):
            self.rejected.append("empty")
            return _error(400, 21220, "Invalid call state for update: nothing to update")
        self.updates.append(CallUpdate(time.monotonic(), account, call, params))
        self._updated.set()
        simulated = self.simulated.get(call)
        if simulated is not None and params.get("Twiml"):
            self._in_background(simulated.run_twiml(params["Twiml"]))
        if params.get("Status") in ("completed", "canceled"):
            self._end(self.leg(call))
        elif params.get("Twiml"):
            self._in_background(self._run_twiml(call, params["Twiml"]))
        return JSONResponse(
            {
                "sid": call,
                "account_sid": account,
                "status": "in-progress",
                "direction": "inbound",
                "api_version": "2010-04-01",
                "uri": f"/2010-04-01/Accounts/{account}/Calls/{call}.json",
            }
        )

    async def _create_call(self, request: Request) -> JSONResponse:
        account = request.path_params["account"]
        if not self._authorized(request):
            self.rejected.append("auth")
            return _error(401, 20003, "Authenticate")
        if account != self.account_sid:
            self.rejected.append("account")
            return _error(404, 20404, f"The requested resource /2010-04-01/Accounts/{account}.json was not found")
        form = await request.form()
        params = {k: str(v) for k, v in form.items()}
        if self.fail_status is not None:
            self.rejected.append(f"fail_status {self.fail_status}")
            return _error(self.fail_status, 20500, "Internal Server Error")
        if not params.get("To") or not params.get("From") or not (params.get("Url") or params.get("Twiml")):
            self.rejected.append("incomplete")
            return _error(400, 21201, "To, From and Url (or Twiml) are required")
        sid = "CA" + secrets.token_hex(16)
        events = [str(v) for k, v in form.multi_items() if k == "StatusCallbackEvent"]
        self.created.append(CreatedCall(time.monotonic(), sid, params, events))
        self._created.set()
        return JSONResponse(
            {
                "sid": sid,
                "account_sid": account,
                "to": params["To"],
                "from": params["From"],
                "status": "queued",
                "direction": "outbound-api",
                "api_version": "2010-04-01",
                "uri": f"/2010-04-01/Accounts/{account}/Calls/{sid}.json",
            },
            status_code=201,
        )

    async def wait_for_create(self, timeout: float = 10.0) -> CreatedCall:
        await asyncio.wait_for(self._created.wait(), timeout)
        self._created.clear()
        return self.created[-1]

    async def created_after(self, seen: int) -> list[CreatedCall]:
        """The calls created after the first ``seen``, waiting for at least one."""
        while len(self.created) <= seen:
            self._created.clear()
            await self._created.wait()
        return self.created[seen:]

    def _target(self, url: str, via: str | None) -> str:
        if via is None and self.instances:
            via = self.instances[self._turn % len(self.instances)]
            self._turn += 1
        if via is None:
            return url
        parts = urlsplit(url)
        return via.rstrip("/") + parts.path + (f"?{parts.query}" if parts.query else "")

    async def _callback(self, url: str, params: dict[str, str], via: str | None = None) -> httpx.Response:
        """POST ``params`` to ``url`` (on the instance ``via``, or the balancer's next one)
        signed as Twilio signs (X-Twilio-Signature) the URL it requests."""
        url = self._target(url, via)
        signature = RequestValidator(self.auth_token).compute_signature(url, params)
        async with httpx.AsyncClient(timeout=10.0) as client:
            return await client.post(url, data=params, headers={"X-Twilio-Signature": signature})

    def _call_params(self, call: CreatedCall, status: str) -> dict[str, str]:
        return {
            "CallSid": call.sid,
            "AccountSid": self.account_sid,
            "From": call.params["From"],
            "To": call.params["To"],
            "CallStatus": status,
            "Direction": "outbound-api",
            "ApiVersion": "2010-04-01",
        }

    async def status(
        self, call: CreatedCall, status: str, duration_s: int | None = None, via: str | None = None
    ) -> httpx.Response:
        """The call's ``StatusCallback`` with ``CallStatus=status`` (and ``CallDuration``)."""
        params = self._call_params(call, status)
        if duration_s is not None:
            params["CallDuration"] = str(duration_s)
        return await self._callback(call.params["StatusCallback"], params, via)

    async def answer(self, call: CreatedCall, via: str | None = None) -> httpx.Response:
        """The callee picked up: Twilio fetches the call's ``Url`` for its TwiML."""
        return await self._callback(call.params["Url"], self._call_params(call, "in-progress"), via)

    async def amd(
        self, call: CreatedCall, answered_by: str, duration_ms: int = 2500, via: str | None = None
    ) -> httpx.Response:
        """The ``AsyncAmdStatusCallback`` with the verdict ``answered_by``."""
        params = {
            "CallSid": call.sid,
            "AccountSid": self.account_sid,
            "AnsweredBy": answered_by,
            "MachineDetectionDuration": str(duration_ms),
        }
        return await self._callback(call.params["AsyncAmdStatusCallback"], params, via)

    def connect(self, call: SimulatedCall) -> None:
        """``call`` is the media stream of its CallSid: TwiML updates of the call play to it."""
        self.simulated[call.call_sid] = call

    async def wait_for_update(self, timeout: float = 10.0) -> CallUpdate:
        await asyncio.wait_for(self._updated.wait(), timeout)
        return self.updates[-1]

    def _page(self, request: Request, key: str, items: list[dict[str, object]]) -> JSONResponse:
        """A list page as Twilio sends one (everything on the first page)."""
        uri = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return JSONResponse(
            {
                key: items,
                "start": 0,
                "end": max(0, len(items) - 1),
                "page": 0,
                "page_size": 50,
                "uri": uri,
                "first_page_uri": uri,
                "next_page_uri": None,
                "previous_page_uri": None,
            }
        )

    def _refused(self, request: Request) -> JSONResponse | None:
        if not self._authorized(request):
            self.rejected.append("auth")
            return _error(401, 20003, "Authenticate")
        account = request.path_params["account"]
        if account != self.account_sid:
            self.rejected.append("account")
            return _error(404, 20404, f"The requested resource /2010-04-01/Accounts/{account}.json was not found")
        return None

    async def _list_conferences(self, request: Request) -> JSONResponse:
        if (refused := self._refused(request)) is not None:
            return refused
        account = self.account_sid
        name, status = request.query_params.get("FriendlyName"), request.query_params.get("Status")
        found: list[dict[str, object]] = [
            {
                "sid": c.sid,
                "account_sid": account,
                "friendly_name": c.name,
                "status": c.status,
                "api_version": "2010-04-01",
                "uri": f"/2010-04-01/Accounts/{account}/Conferences/{c.sid}.json",
            }
            for c in self.conferences.values()
            if (name is None or c.name == name) and (status is None or c.status == status)
        ]
        return self._page(request, "conferences", found)

    async def _list_participants(self, request: Request) -> JSONResponse:
        if (refused := self._refused(request)) is not None:
            return refused
        account, sid = self.account_sid, request.path_params["conference"]
        conference = next((c for c in self.conferences.values() if c.sid == sid), None)
        if conference is None:
            return _error(404, 20404, f"The requested resource /Conferences/{sid}.json was not found")
        participants: list[dict[str, object]] = [
            {
                "account_sid": account,
                "call_sid": call,
                "conference_sid": sid,
                "status": "connected",
                "muted": False,
                "hold": False,
                "coaching": False,
                "uri": f"/2010-04-01/Accounts/{account}/Conferences/{sid}/Participants/{call}.json",
            }
            for call in conference.participants
        ]
        return self._page(request, "participants", participants)

    async def __aenter__(self) -> TwilioRestFake:
        at = "/2010-04-01/Accounts/{account}"
        app = Starlette(
            routes=[
                Route(at + "/Calls.json", self._create_call, methods=["POST"]),
                Route(at + "/Calls/{call}.json", self._update_call, methods=["POST"]),
                Route(at + "/Conferences.json", self._list_conferences, methods=["GET"]),
                Route(at + "/Conferences/{conference}/Participants.json", self._list_participants, methods=["GET"]),
            ]
        )
        self.base_url = await self._stack.enter_async_context(loopback_server(app))
        return self

    async def __aexit__(self, *exc: object) -> None:
        for run in self._runs:
            run.cancel()
        await asyncio.gather(*self._runs, return_exceptions=True)
        await self._stack.aclose()
