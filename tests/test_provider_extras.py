"""Provider SDKs are install extras: the runtime set holds none of them (nor the test-only
soxr and python-multipart), and a config naming a provider whose SDK is missing is refused
with the extra to install."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def names(requirements: list[str]) -> set[str]:
    return {req.split(";")[0].split("[")[0].split(">")[0].split("<")[0].split("=")[0].strip() for req in requirements}


def test_runtime_dependencies_hold_no_provider_sdk_and_no_test_only_package() -> None:
    runtime = names(PYPROJECT["project"]["dependencies"])
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert not runtime & {"openai", "google-genai", "aws-sdk-bedrock-runtime", "awscrt", "boto3"}
    assert not runtime & {"soxr", "python-multipart"}
    assert names(extras["openai"]) == {"openai"}
    assert names(extras["gemini"]) == {"google-genai"}
    assert names(extras["nova"]) == {"aws-sdk-bedrock-runtime", "awscrt", "boto3"}
    assert names(extras["local"]) == {"pocketsphinx"}  # the cascade's local speech-to-text
    assert names(extras["s3"]) == {"boto3"}  # [recording] store = "s3" (voicebot.recordings)
    assert extras["all"] == ["voicebot[openai,gemini,nova,local,s3,vad]"]
    assert "voicebot[all]" in extras["dev"]  # ./dev installs [dev]: every provider


def test_the_build_backend_floor_reads_an_spdx_license() -> None:
    # setuptools < 77 refuses `license = "Apache-2.0"` (PEP 639); 69.5.1 did, with the old floor.
    assert PYPROJECT["build-system"]["requires"] == ["setuptools>=77"]
    assert PYPROJECT["project"]["license"] == "Apache-2.0"
    assert "Apache License" in (ROOT / "LICENSE").read_text()


CONFIG = """
[twilio]
validate_signatures = false
[providers.{name}]
type = "{type}"
{extra}
[[routes]]
name = "r"
providers = ["{name}"]
"""


@pytest.mark.parametrize(
    ("type_", "blocked", "module", "extra", "keys"),
    [
        ("openai_realtime", "openai", "openai", "openai", 'api_key = "sk-test-1234567890"'),
        ("gemini_live", "google", "google.genai", "gemini", 'api_key = "AIza-test-1234567890"'),
        ("nova_sonic", "awscrt", "awscrt", "nova", ""),
    ],
)
def test_a_provider_whose_sdk_is_missing_names_the_extra(
    tmp_path: Path, type_: str, blocked: str, module: str, extra: str, keys: str
) -> None:
    config = tmp_path / "c.toml"
    config.write_text(CONFIG.format(name="p", type=type_, extra=keys))
    # sys.modules[name] = None makes `import name` raise ModuleNotFoundError, as when it is absent.
    code = (
        f"import sys; sys.modules[{blocked!r}] = None; from voicebot.cli import main; "
        f"sys.exit(main(['config', 'check', {str(config)!r}]))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert (
        f"providers.p.type: provider type {type_!r} needs its SDK ({module} is not installed): "
        f"pip install 'voicebot[{extra}]' (or 'voicebot[all]')"
    ) in result.stderr
