"""/healthz, /readyz and /metrics over real HTTP, with readiness driven by the real
circuit breakers and the drain flag."""

from __future__ import annotations

import httpx

from tests.support.server import AUTH_TOKEN, RunningServer, running_server

CONFIG = f"""
[twilio]
auth_token = "{AUTH_TOKEN}"
validate_signatures = true

[resilience]
circuit_failures = 2
circuit_cooldown_s = 600

[providers.first]
type = "echo"

[providers.second]
type = "echo"

[[routes]]
name = "main"
to = ["+1555*"]
providers = ["first", "second"]

[[routes]]
name = "backup-only"
providers = ["second"]
"""


async def get(server: RunningServer, path: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=5.0) as client:
        return await client.get(server.url + path)


async def open_circuit(server: RunningServer, provider: str) -> None:
    async def fail() -> None:
        breaker = server.runtime.circuits[provider]
        for _ in range(breaker.failures):
            breaker.record_failure()

    await server.run_on_server(fail())


async def test_ready_until_a_route_has_no_provider_left_then_not_ready() -> None:
    async with running_server(CONFIG) as server:
        health = await get(server, "/healthz")
        assert health.status_code == 200 and health.json() == {"status": "ok", "active_calls": 0}
        ready = await get(server, "/readyz")
        assert ready.status_code == 200 and ready.json() == {"status": "ready", "reasons": []}

        await open_circuit(server, "first")  # "main" still has "second"
        assert (await get(server, "/readyz")).status_code == 200

        await open_circuit(server, "second")  # now neither route has a provider to use
        ready = await get(server, "/readyz")
        assert ready.status_code == 503
        assert ready.json()["reasons"] == [
            "route 'main': every provider's circuit is open",
            "route 'backup-only': every provider's circuit is open",
        ]
        assert (await get(server, "/healthz")).status_code == 200  # alive: do not restart it


async def test_draining_is_not_ready_but_alive() -> None:
    async with running_server(CONFIG) as server:
        server.runtime.draining = True
        ready = await get(server, "/readyz")
        assert ready.status_code == 503 and ready.json()["reasons"] == ["draining for shutdown"]
        assert (await get(server, "/healthz")).status_code == 200


async def test_metrics_of_an_idle_instance_show_zero_calls_and_circuit_state() -> None:
    async with running_server(CONFIG) as server:
        response = await get(server, "/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
        assert 'service_name="voicebot"' in response.text
        # Before any call: the autoscaler's series exists, at zero, for every route/provider.
        assert 'voicebot_calls_active{provider="second",route="backup-only"} 0.0' in response.text
        assert 'voicebot_provider_circuit_open{provider="first"} 0.0' in response.text
        await open_circuit(server, "first")
        response = await get(server, "/metrics")
        assert 'voicebot_provider_circuit_open{provider="first"} 1.0' in response.text
        assert 'voicebot_provider_circuit_open{provider="second"} 0.0' in response.text
