from __future__ import annotations

import logging

import pytest

from s2s.registry import register

# Test-only provider types, registered as any plug-in is: by the module that exposes SPEC.
register("loopback", "tests.fakes.faulty_provider")

# Shared checks in tests/support (e.g. barge_in.assert_cut_at_the_clear) report their operands
# on failure like asserts written in a test module.
pytest.register_assert_rewrite("tests.support")


@pytest.fixture(autouse=True)
def _log_level(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
