"""The generated Prometheus configuration: jobs, targets, labels, file_sd."""

from __future__ import annotations

import pytest

from gossamer.telemetry.promconfig import BadServer, scrape_config, sidecar_targets

PROXIES = [
    {"node_id": "b-0.shop", "connected": True,
     "metadata": {"namespace": "shop", "service": "b", "workload": "b-0", "admin_port": 9902.0}},
    {"node_id": "a-0.shop", "connected": True,
     "metadata": {"namespace": "shop", "service": "a", "workload": "a-0", "admin_port": 9901}},
    {"node_id": "gone.shop", "connected": False, "metadata": {"admin_port": 9903}},
    {"node_id": "noadmin.shop", "connected": True, "metadata": {"service": "x"}},
]


def test_sidecar_targets_are_connected_proxies_with_their_labels() -> None:
    assert sidecar_targets(PROXIES) == [
        {"targets": ["127.0.0.1:9901"], "labels": {"namespace": "shop", "service": "a",
                                                   "workload": "a-0", "node_id": "a-0.shop"}},
        {"targets": ["127.0.0.1:9902"], "labels": {"namespace": "shop", "service": "b",
                                                   "workload": "b-0", "node_id": "b-0.shop"}}]


def test_scrape_config_static_and_file_sd() -> None:
    config = scrape_config("http://10.1.2.3:15080", PROXIES, interval="5s")
    cp, sidecars = config["scrape_configs"]
    assert cp["static_configs"] == [{"targets": ["10.1.2.3:15080"]}]
    assert sidecars["metrics_path"] == "/stats/prometheus"
    assert len(sidecars["static_configs"]) == 2
    assert config["global"]["scrape_interval"] == "5s"
    with_file = scrape_config("http://cp:15080", PROXIES, file_sd="/etc/prom/sidecars.json")
    assert with_file["scrape_configs"][1]["file_sd_configs"][0]["files"] == [
        "/etc/prom/sidecars.json"]
    assert "static_configs" not in with_file["scrape_configs"][1]


def test_a_server_without_a_port_is_refused() -> None:
    with pytest.raises(BadServer, match="host and a port"):
        scrape_config("http://cp", PROXIES)
