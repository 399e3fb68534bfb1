"""`voicebot tape view TAPE --html OUT`: one self-contained page per call.

A recorded fixture tape (OpenAI-fake barge-in, with a tool call and DTMF spliced in) is
rendered; the page's structure is checked as parsed HTML, then the page is loaded in headless
Chromium (Debian package `chromium`; `./dev test` installs it) and checked as laid out: the
script ran, and the screenshot shows the caller's and the bot's audio where the tape has it.
"""

from __future__ import annotations

import base64
import io
import itertools
import json
import shutil
import struct
import subprocess
import zlib
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from scipy.io import wavfile

from s2s.events import ToolCall
from tests.support.audio import active_segments
from transcoding.mulaw import mulaw_to_pcm16
from voicebot.cli import main
from voicebot.devtools.tape.compare import compare
from voicebot.devtools.tape.format import ProviderIn, ProviderOut, TwilioFrame, dumps_line, encode_record, read_tape
from voicebot.devtools.tape.html_view import page_for_tape, render
from voicebot.devtools.tape.replay import ReplayResult
from voicebot.devtools.tape.view import view_of

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "fixtures" / "calls" / "openai_barge_in.jsonl"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture
def tape_path(tmp_path: Path) -> Path:
    """The fixture with a tool call + its result at 2.5 s and the caller pressing 7 at 3 s."""
    extra = [
        ProviderIn(2500.0, ToolCall(call_id="call_1", name="order_status", arguments={"order": "A17"})),
        ProviderOut(2510.0, "tool_result", call_id="call_1", output='{"status": "baked"}'),
        TwilioFrame(3000.0, "in", json.dumps({"event": "dtmf", "streamSid": "MZ1", "dtmf": {"digit": "7"}})),
    ]
    lines = FIXTURE.read_text().splitlines(keepends=True)
    out = [lines[0]]
    for line in lines[1:]:
        while extra and extra[0].t <= json.loads(line)["t"]:
            out.append(dumps_line(encode_record(extra.pop(0))))
        out.append(line)
    path = tmp_path / "call.jsonl"
    path.write_text("".join(out))
    return path


class Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {k: v or "" for k, v in attrs}))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def find(self, tag: str, **attrs: str) -> list[dict[str, str]]:
        return [a for t, a in self.tags if t == tag and all(a.get(k, "").split()[:1] == [v] for k, v in attrs.items())]

    def by_class(self, css: str, tag: str = "span") -> list[dict[str, str]]:
        return [a for t, a in self.tags if t == tag and css in a.get("class", "").split()]


def parse(text: str) -> Collect:
    page = Collect()
    page.feed(text)
    return page


def test_the_command_writes_the_call_as_a_stereo_wav_the_same_as_the_page_plays(
    tape_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "call.wav"
    assert main(["tape", "view", str(tape_path), "--wav", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    rate, stereo = wavfile.read(out)
    view = view_of(read_tape(tape_path))
    caller = np.frombuffer(mulaw_to_pcm16(view.caller_audio), dtype="<i2")
    bot = np.frombuffer(mulaw_to_pcm16(view.heard_audio), dtype="<i2")
    assert rate == 8000 and stereo.shape == (max(caller.size, bot.size), 2) and bot.size > 8000
    assert np.array_equal(stereo[: caller.size, 0], caller) and np.array_equal(stereo[: bot.size, 1], bot)


def test_the_command_writes_a_self_contained_page_of_the_call(
    tape_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "call.html"
    assert main(["tape", "view", str(tape_path), "--html", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    page = parse(out.read_text())
    # Nothing to fetch at view time: no link, no external script, image or media.
    assert not page.find("link")
    for _, attrs in page.tags:
        for name in ("src", "href"):
            assert not attrs.get(name) or attrs[name].startswith("data:"), attrs
    # Both tracks play: one stereo WAV, caller left and bot right, as the view computes them.
    (audio,) = page.find("audio")
    rate, stereo = wavfile.read(io.BytesIO(base64.b64decode(audio["src"].removeprefix("data:audio/wav;base64,"))))
    view = view_of(read_tape(tape_path))
    assert rate == 8000 and stereo.shape[1] == 2
    caller = np.frombuffer(mulaw_to_pcm16(view.caller_audio), dtype="<i2")
    bot = np.frombuffer(mulaw_to_pcm16(view.heard_audio), dtype="<i2")
    assert np.array_equal(stereo[: caller.size, 0], caller) and np.array_equal(stereo[: bot.size, 1], bot)
    # Waveforms and lanes share one axis: every lane is a row of the one timeline.
    lanes = [a["data-lane"] for a in page.find("div") if "data-lane" in a]
    assert lanes == [
        "axis", "caller", "bot", "turns", "barge-ins", "marks", "dtmf", "tools", "transcripts", "provider", "twilio",
    ]  # fmt: skip
    assert len(page.find("svg")) == 2
    text = " ".join(page.text)
    # The barge-in as its chain: speech start -> clear -> truncate at the heard ms (from the tape).
    assert "speech-start" in text and "clear" in text and "truncate @580 ms" in text
    (chain,) = page.by_class("chain")
    assert "speech start" in chain["title"] and "clear" in chain["title"] and "at 580 ms heard" in chain["title"]
    turns = page.by_class("turn")
    assert [("interrupted" in t["class"], "unheard" in t["class"]) for t in turns] == [
        (True, False),
        (False, True),
        (False, False),
    ]
    # Marks: every mark sent and every echo, each a tick.
    assert len(page.by_class("mark-out")) == len(page.by_class("mark-in")) == 60
    assert "order_status()" in text and '{"status": "baked"}' in text
    assert [a for a in page.by_class("point") if a["data-t"] == "3000.0" and "pressed 7" in a["title"]]
    assert "caller tone 1000 hertz" in text and "bot tone 440 hertz" in text


def test_a_replay_page_marks_each_divergence_where_it_happened(tape_path: Path) -> None:
    tape = read_tape(tape_path)
    expected = view_of(tape)
    other = view_of(read_tape(ROOT / "tests" / "fixtures" / "calls" / "echo_two_turns.jsonl"))
    divergences = compare(expected, other)
    result = ReplayResult(tape, expected, other, divergences, "provider from the tape", 1.0)
    page = parse(render(page_for_tape(tape)))
    assert not page.by_class("divergence")
    from voicebot.devtools.tape.html_view import page_for_replay

    page = parse(render(page_for_replay(result)))
    listed = page.by_class("divergence", "li")
    assert len(listed) == len(divergences) > 0
    bands = page.by_class("divergence-band")
    placed = [d for d in divergences if d.at_ms is not None]
    assert placed and sorted(float(b["data-t"]) for b in bands) == sorted(round(d.at_ms or 0, 1) for d in divergences)
    assert len(page.find("audio")) == 2  # the call and the replay
    assert "replay turns" in [a.get("data-lane") for a in page.find("div")]


# -- in a browser ------------------------------------------------------------------------

GEOMETRY_PROBE = """<script>
window.addEventListener('load', () => requestAnimationFrame(() => {
  const box = (sel) => { const r = document.querySelector(sel).getBoundingClientRect();
                         return [r.left, r.top, r.width, r.height]; };
  const out = document.createElement('pre'); out.id = 'geometry';
  out.textContent = JSON.stringify({caller: box('[data-lane=caller] .track'), bot: box('[data-lane=bot] .track'),
                                    playhead: document.getElementById('playhead').style.left});
  document.body.appendChild(out);
}));
</script></body>"""


def png_rgb(data: bytes) -> np.ndarray:
    """Decode an 8-bit RGB/RGBA non-interlaced PNG (what Chromium writes) to an HxWx3 array."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, height, channels = 8, b"", 0, 0, 0
    while pos < len(data):
        (length,), kind = struct.unpack(">I", data[pos : pos + 4]), data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and interlace == 0 and color in (2, 6)
            channels = 3 if color == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * channels
    rows = np.zeros((height, stride), dtype=np.int32)
    prev = np.zeros(stride, dtype=np.int32)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], np.frombuffer(raw, np.uint8, stride, y * (stride + 1) + 1).astype(np.int32)
        cur = line.copy()
        if kind == 2:
            cur = (line + prev) & 0xFF
        elif kind in (1, 3, 4):
            for x in range(stride):
                a = cur[x - channels] if x >= channels else 0
                b, c = prev[x], prev[x - channels] if x >= channels else 0
                if kind == 1:
                    pred = a
                elif kind == 3:
                    pred = (a + b) // 2
                else:
                    p = a + b - c
                    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                    pred = a if pa <= pb and pa <= pc else b if pb <= pc else c
                cur[x] = (line[x] + pred) & 0xFF
        rows[y] = cur
        prev = cur
    return rows.reshape(height, width, channels)[:, :, :3].astype(np.uint8)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium; ./dev test does)")
def test_the_page_in_headless_chromium_shows_both_tracks_where_the_audio_is(tape_path: Path, tmp_path: Path) -> None:
    assert CHROMIUM is not None
    page = render(page_for_tape(read_tape(tape_path)))
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("</body>", GEOMETRY_PROBE, 1))
    browser = [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--mute-audio"]
    browser += ["--window-size=1400,1000", f"--user-data-dir={tmp_path / 'profile'}"]
    # Headless Chromium on a loaded machine now and then exits with no DOM at all (a renderer that
    # did not start); that says nothing about the page, so it gets two more tries, then the error.
    for _ in range(3):
        run = subprocess.run(
            [*browser, "--virtual-time-budget=2000", "--dump-dom", probe.as_uri()],
            capture_output=True,
            text=True,
            timeout=60,
        )
        dom = run.stdout
        if '<pre id="geometry">' in dom:
            break
    assert '<pre id="geometry">' in dom, f"chromium gave no page (exit {run.returncode}): {run.stderr[-2000:]}"
    start = dom.index('<pre id="geometry">') + len('<pre id="geometry">')
    geometry = json.loads(dom[start : dom.index("</pre>", start)].replace("&quot;", '"'))
    assert geometry["playhead"].endswith("px")  # the page's script ran and placed the playhead
    shot = tmp_path / "call.png"
    subprocess.run([*browser, f"--screenshot={shot}", probe.as_uri()], capture_output=True, timeout=60, check=True)
    pixels = png_rgb(shot.read_bytes())
    assert pixels.shape[1] == 1400
    view = view_of(read_tape(tape_path))
    duration = max(view.duration_ms, len(view.caller_audio) / 8, len(view.heard_audio) / 8)
    for lane, audio, colour in (
        ("caller", view.caller_audio, (0x2F, 0x6F, 0xB3)),
        ("bot", view.heard_audio, (0x2E, 0x8B, 0x57)),
    ):
        left, top, width, height = geometry[lane]
        row = pixels[int(top + height / 2)]
        painted = np.all(np.abs(row.astype(int) - colour) <= 12, axis=1)
        segments = active_segments(np.frombuffer(mulaw_to_pcm16(audio), dtype="<i2"), 8000, -35)
        assert segments, lane
        for begin, end in segments:  # inside each stretch of sound the waveform is drawn...
            x = int(left + (begin + end) / 2 / duration * width)
            assert painted[x - 2 : x + 3].all(), (lane, begin, end)
        gaps = [(a[1], b[0]) for a, b in itertools.pairwise(segments) if b[0] - a[1] > 200]
        for begin, end in gaps:  # ...and between them it is not
            x = int(left + (begin + end) / 2 / duration * width)
            assert not painted[x - 2 : x + 3].any(), (lane, begin, end)
