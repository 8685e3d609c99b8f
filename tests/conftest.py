"""Suite-wide rules: under GOSSAMER_REQUIRE_ALL=1 (CI) a skipped test fails, and property
tests draw the same examples every run."""

from __future__ import annotations

import os
from collections.abc import Generator

import pytest
from hypothesis import settings

from tests.hosts import module_netns_hosts, netns_hosts

__all__ = ["module_netns_hosts", "netns_hosts"]  # namespace hosts (tests/hosts.py)

REQUIRE_ALL = os.environ.get("GOSSAMER_REQUIRE_ALL") == "1"

# CI draws the same examples every run, so a landing is never decided by which random
# documents a property test happened to draw; runs elsewhere keep exploring new ones.
settings.register_profile("ci", derandomize=True, print_blob=True)
if REQUIRE_ALL:
    settings.load_profile("ci")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[
        None, pytest.TestReport, None]:
    outcome = yield
    report = outcome.get_result()
    if REQUIRE_ALL and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped under GOSSAMER_REQUIRE_ALL=1: {report.longrepr}"
