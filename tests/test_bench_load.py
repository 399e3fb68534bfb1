"""``python -m bench load`` at toy size, so the harness cannot rot: real server processes (the
featureless floor and ``voicebot serve``), real provider fakes, signed calls. Behaviour only:
the calls are placed and answered and the latencies are paired across the server; how fast is
the benchmark's business, not the tests'."""

from __future__ import annotations

import asyncio

import pytest

from bench import load


@pytest.mark.timeout(240)
@pytest.mark.parametrize("provider", ["openai", "gemini", "nova"])
def test_both_servers_answer_every_call_and_every_audio_chunk_is_paired(
    provider: str, capsys: pytest.CaptureFixture[str]
) -> None:
    load.main(["--provider", provider, "--calls", "2", "--seconds", "3", "--warmup", "0.5", "--spread", "0.1"])
    out = capsys.readouterr().out
    figures = out.split("Conditions:")[0]
    # "(invalid)": the shared machine kept the client from real time, a figure not a failure
    rows = {
        line.split("|")[2].replace("(invalid)", "").strip(): line.split("|")[3:-1]
        for line in figures.splitlines()
        if line.startswith("| 2 ")
    }
    assert set(rows) >= {"floor", "voicebot", "voicebot ÷ floor"}, out
    for server in ("floor", "voicebot"):
        cpu, _rss, out_ms, in_ms, lag, answered = (cell.strip() for cell in rows[server])
        assert answered == "2/2", out
        assert float(cpu) > 0, out
        # both directions paired: "p50 / p99" in ms for audio that crossed the server
        assert all(len(cell.split(" / ")) == 2 for cell in (out_ms, in_ms, lag)), out


@pytest.mark.timeout(120)
def test_the_echo_line_has_no_provider_socket_to_time() -> None:
    figures = asyncio.run(load.measure("echo", "voicebot", 2, seconds=3, warmup=0.5, spread=0.1, profile=None))
    assert (figures.placed, figures.answered, figures.failures) == (2, 2, [])
    assert figures.cpu_pct_per_call > 0 and figures.loop_lag["count"] > 0
    assert figures.out_latency["count"] == 0 and figures.in_latency["count"] == 0


@pytest.mark.timeout(120)
def test_the_cascade_path_is_answered_and_its_audio_paired_both_ways() -> None:
    figures = asyncio.run(load.measure("cascade", "voicebot", 2, seconds=3, warmup=0.5, spread=0.1, profile=None))
    assert (figures.placed, figures.answered, figures.failures) == (2, 2, [])
    # caller audio reached the transcription session, and the speech endpoint's audio the caller
    assert figures.out_latency["count"] > 0 and figures.in_latency["count"] > 0
