"""``tts = { type = "openai_speech" }``: OpenAI's speech endpoint (``POST /audio/speech``).

Through the official ``openai`` package (``client.audio.speech.with_streaming_response.create``),
reading the body as it arrives so the first audio goes out before the sentence is finished.
``response_format = "pcm"`` is raw 16-bit little-endian mono at 24 kHz (OpenAI's text-to-speech
guide); the endpoint offers no mu-law, so the bridge resamples 24 kHz to the line's 8 kHz
(~2 ms, README "Transcoding"). Stopping an answer closes the response.

Models: ``gpt-4o-mini-tts-2025-12-15`` is the newest the SDK lists for this endpoint; OpenAI has
announced that all of this endpoint's models shut down on 2027-01-06 (OpenAI's text-to-speech
guide, deprecations page). ``base_url`` points the part at any server that answers the same
request (several speech vendors and local servers do).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Literal

import httpx
from openai import APIConnectionError, APIStatusError, AsyncOpenAI, omit
from pydantic import Field, SecretStr

from s2s.cascade.parts import PartConfig, PartError, PartSpec, TextToSpeech
from s2s.provider import SessionContext
from transcoding.formats import PCM16_24K

# Read size from the response body: 40 ms of 24 kHz PCM16, one outbound mark interval.
READ_BYTES = PCM16_24K.nbytes(40)


class OpenAISpeechConfig(PartConfig):
    type: Literal["openai_speech"] = "openai_speech"
    api_key: SecretStr
    base_url: str = "https://api.openai.com/v1"
    model: str = "gpt-4o-mini-tts-2025-12-15"
    voice: str = "marin"
    instructions: str | None = Field(default=None, description="how to speak (not for tts-1 models)")
    speed: float = Field(default=1.0, ge=0.25, le=4.0)
    timeout_s: float = Field(default=15.0, gt=0)


class OpenAISpeech(TextToSpeech):
    output_format = PCM16_24K

    def __init__(self, client: AsyncOpenAI, config: OpenAISpeechConfig) -> None:
        self._client = client
        self.config = config

    async def speak(self, text: str) -> AsyncGenerator[bytes, None]:
        odd = b""  # keep whole 16-bit samples: a read may split one
        try:
            async with self._client.audio.speech.with_streaming_response.create(
                model=self.config.model,
                voice=self.config.voice,
                input=text,
                response_format="pcm",
                speed=self.config.speed,
                instructions=self.config.instructions or omit,
            ) as response:
                async for chunk in response.iter_bytes(READ_BYTES):
                    data = odd + chunk
                    cut = len(data) - len(data) % 2
                    odd = data[cut:]
                    if cut:
                        yield data[:cut]
        except APIStatusError as exc:
            raise PartError(
                f"speech {self.config.model}: HTTP {exc.status_code}: {exc.message}",
                retryable=exc.status_code not in (400, 401, 403, 404),
            ) from exc
        except (APIConnectionError, httpx.HTTPError) as exc:
            raise PartError(f"speech {self.config.model}: {type(exc).__name__}: {exc}") from exc


class OpenAISpeechOpener:
    def __init__(self, config: OpenAISpeechConfig) -> None:
        self.config = config
        self._client = AsyncOpenAI(
            api_key=config.api_key.get_secret_value(),
            base_url=config.base_url,
            timeout=config.timeout_s,
            max_retries=0,
        )

    async def open(self, ctx: SessionContext) -> OpenAISpeech:
        return OpenAISpeech(self._client, self.config)


PART = PartSpec("tts", OpenAISpeechConfig, OpenAISpeechOpener)
