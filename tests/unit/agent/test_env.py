"""The app's environment as the agent builds it: the mesh's variables, and none of
the agent's own credentials (issue 16 A: a compromised app must not be able to act
as its agent). tests/e2e/test_security.py reads a real app's /proc/PID/environ."""

from __future__ import annotations

import asyncio

import pytest

from gossamer.agent.runner import Agent, AgentConfig

TOKEN = "gst_0123456789ab_" + "x" * 43


def test_app_env_has_no_agent_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOSSAMER_TOKEN", TOKEN)
    monkeypatch.setenv("GOSSAMER_TOKEN_FILE", "/run/secrets/join-token")
    monkeypatch.setenv("MY_COPY", f"Bearer {TOKEN}")  # the token under another name
    monkeypatch.setenv("GOSSAMER_CA_FILE", "/etc/gossamer/ca.pem")  # public: kept
    monkeypatch.setenv("LANG", "C.UTF-8")
    agent = Agent(AgentConfig(service="web", app_port=8080, outbound_port=15001,
                              name="web-0", token=TOKEN, env={"APP_MODE": "prod"}))
    try:
        env = agent.app_env()
    finally:
        asyncio.run(agent.client.close())
    assert "GOSSAMER_TOKEN" not in env
    assert "GOSSAMER_TOKEN_FILE" not in env
    assert "MY_COPY" not in env
    assert not any(TOKEN in value for value in env.values())
    assert env["GOSSAMER_CA_FILE"] == "/etc/gossamer/ca.pem"
    assert env["LANG"] == "C.UTF-8"
    assert env["APP_MODE"] == "prod"
    assert env["GOSSAMER_WORKLOAD"] == "web-0"
    assert env["HTTP_PROXY"] == "http://127.0.0.1:15001"
