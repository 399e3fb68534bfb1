"""The ``[providers.NAME]`` table for ``type = "nova_sonic"``.

Credentials never appear here: they come from the standard AWS chain (environment
``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/``AWS_SESSION_TOKEN``, the shared
config/credentials files and ``profile``, SSO, assume-role, container and instance roles),
resolved by boto3 (see :mod:`s2s.nova_sonic.credentials`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, FilePath, model_validator

from s2s.provider import ProviderConfig

NOVA_2_SONIC = "amazon.nova-2-sonic-v1:0"
NOVA_SONIC_V1 = "amazon.nova-sonic-v1:0"

SampleRate = Literal[8000, 16000, 24000]
"""The ``sampleRateHertz`` values Nova accepts for input and output audio.

Verified: the AWS Nova 2 user guide (sonic-input-events, sonic-output-events) lists
``"sampleRateHertz": 8000 | 16000 | 24000`` for both ``audioInputConfiguration`` and
``audioOutputConfiguration``, LiveKit's typed events use the same set, and AWS's own Twilio
sample (aws-samples/sample-amazon-nova-sonic-twilio-integration) runs Sonic at 8 kHz both ways,
mu-law-encoding the model's output without resampling. Hence the 8 kHz default: the bridge
only decodes/encodes mu-law, with no resampler and no added filter delay."""


class NovaSonicConfig(ProviderConfig):
    type: Literal["nova_sonic"] = "nova_sonic"
    model_id: str = Field(
        default=NOVA_2_SONIC,
        description=f"{NOVA_2_SONIC} (default) or {NOVA_SONIC_V1}; v1 has no text input mid-session",
    )
    region: str | None = Field(
        default=None,
        description="AWS region; default AWS_REGION/AWS_DEFAULT_REGION, the profile's, us-east-1",
    )
    profile: str | None = Field(default=None, description="AWS shared-config profile name (not a secret)")
    endpoint_url: str | None = Field(
        default=None,
        description="override the Bedrock runtime endpoint (a VPC endpoint, a local fake); "
        "memory://NAME routes to an in-process stream factory (see s2s.nova_sonic.transport)",
    )
    voice: str = Field(default="matthew", description="voiceId, e.g. matthew, tiffany, amy")
    instructions: str = Field(
        default="You are a helpful voice assistant on a phone call. Keep answers short and conversational.",
        description="system prompt when the route gives none",
    )
    input_sample_rate: SampleRate = 8000
    output_sample_rate: SampleRate = 8000
    endpointing_sensitivity: Literal["HIGH", "MEDIUM", "LOW"] | None = Field(
        default=None,
        description="Nova 2 turnDetectionConfiguration: end-of-turn pause 1.5/1.75/2.0 s; none = default",
    )
    max_tokens: int = Field(default=1024, ge=1)
    temperature: float = Field(default=0.7, ge=0.0, le=1.0)
    top_p: float = Field(default=0.9, ge=0.0, le=1.0)
    stream_limit_s: float = Field(default=480.0, gt=0, description="how long AWS keeps one stream open (~8 min)")
    renew_after_s: float = Field(
        default=360.0,
        gt=0,
        description="emit SessionExpiring after this long so the stream is renewed in time",
    )
    greeting_audio: FilePath | None = Field(
        default=None,
        description="v1 only: WAV (mono, 16-bit, at input_sample_rate) of a short spoken cue such as "
        "'hello', streamed as caller audio so v1 speaks first (v1 has no text input)",
    )

    @model_validator(mode="after")
    def _renewal_before_limit(self) -> NovaSonicConfig:
        if self.renew_after_s >= self.stream_limit_s:
            raise ValueError(
                f"renew_after_s ({self.renew_after_s}) must be below stream_limit_s ({self.stream_limit_s})"
            )
        return self

    @property
    def is_nova2(self) -> bool:
        """Nova 2 features (text input mid-session, turn detection) by model id. Unknown ids
        (an ARN of a provisioned Nova 2 model, say) count as Nova 2 unless they name v1."""
        return NOVA_SONIC_V1 not in self.model_id
