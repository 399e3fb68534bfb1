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
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
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
            run = asyncio.create_task(simulated.run_twiml(params["Twiml"]))
            self._runs.add(run)
            run.add_done_callback(self._runs.discard)
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

    async def __aenter__(self) -> TwilioRestFake:
        app = Starlette(
            routes=[
                Route("/2010-04-01/Accounts/{account}/Calls.json", self._create_call, methods=["POST"]),
                Route("/2010-04-01/Accounts/{account}/Calls/{call}.json", self._update_call, methods=["POST"]),
            ]
        )
        self.base_url = await self._stack.enter_async_context(loopback_server(app))
        return self

    async def __aexit__(self, *exc: object) -> None:
        for run in self._runs:
            run.cancel()
        await asyncio.gather(*self._runs, return_exceptions=True)
        await self._stack.aclose()
