"""The node metadata the agent writes is the node metadata the control plane reads."""

from __future__ import annotations

import pytest
from google.protobuf import json_format, struct_pb2

from gossamer.agent.runner import Agent, AgentConfig, UpstreamSpec
from gossamer.contract.node import BadNodeMetadata, Capture, NodeMetadata, Upstream
from gossamer.contract.protocol import Protocol


def _agent_node() -> NodeMetadata:
    config = AgentConfig(server="http://127.0.0.1:1", service="web", app_port=8080,
                         inbound_port=15006, outbound_port=15001, admin_port=15000,
                         namespace="shop", name="web-1", protocol="http2",
                         labels={"zone": "a"}, service_account="web-sa",
                         upstreams=[UpstreamSpec("db", 5432, 25432, protocol="tcp"),
                                    UpstreamSpec("api", 80, 18080, namespace="core")])
    return Agent(config).node("/tmp/web-1/access.log")


def test_what_the_agent_writes_reads_back_as_the_same_object_through_envoys_struct() -> None:
    node = _agent_node()
    # Envoy sends the metadata back as a protobuf Struct: numbers become floats.
    struct = json_format.ParseDict(node.to_metadata(), struct_pb2.Struct())
    back = NodeMetadata.from_metadata(node.node_id, json_format.MessageToDict(struct))
    assert back == node
    assert back.names_itself
    assert back.node_id == "web-1.shop"
    assert back.app_protocol is Protocol.HTTP2
    assert back.upstreams == (Upstream("db", "shop", 5432, 25432),
                              Upstream("api", "core", 80, 18080))
    assert (back.account, back.labels) == ("web-sa", (("app", "web"), ("zone", "a")))


def test_capture_and_its_resolvers_read_back_as_written() -> None:
    node = NodeMetadata("c-0.default", "c", "default", "c-0", 0, "127.0.0.1", 0, None, 15000,
                        capture=Capture(15011, 15055, (("10.0.0.2", 53), ("10.0.0.3", 5353),
                                                       ("fd00::1", 53), ("fd00::2", 5353))))
    written = node.to_metadata()
    assert written["dns_resolvers"] == ["10.0.0.2", "10.0.0.3:5353", "fd00::1", "[fd00::2]:5353"]
    struct = json_format.ParseDict(written, struct_pb2.Struct())
    assert NodeMetadata.from_metadata(node.node_id, json_format.MessageToDict(struct)) == node


@pytest.mark.parametrize(("key", "value"), [
    ("service", ""), ("inbound_port", 70000), ("admin_port", "x"), ("app_protocol", "udp"),
    ("labels", {"bad key!": "v"}), ("service_account", "Not_A_Label"),
    ("access_log", "relative/path"), ("upstreams", {"service": "db"}),
    ("capture", "yes"), ("dns_resolvers", ["not-an-ip"]), ("gateway", "Egress Gateway"),
])
def test_metadata_no_agent_writes_is_one_error_naming_the_key(key: str, value: object) -> None:
    meta = _agent_node().to_metadata() | {"capture": True} | {key: value}
    with pytest.raises(BadNodeMetadata, match=key):
        NodeMetadata.from_metadata("web-1.shop", meta)


def test_an_egress_gateway_agent_says_so_and_registers_without_an_app() -> None:
    config = AgentConfig(server="http://127.0.0.1:1", service="egress", app_port=0,
                         inbound_port=15006, outbound_port=15001, admin_port=15000,
                         name="egress-0", gateway="egress")
    agent = Agent(config)
    node = agent.node()
    struct = json_format.ParseDict(node.to_metadata(), struct_pb2.Struct())
    back = NodeMetadata.from_metadata(node.node_id, json_format.MessageToDict(struct))
    assert back == node
    assert back.gateway == "egress"
    assert config.registers
    spec = agent.workload_doc()["spec"]
    assert isinstance(spec, dict)
    assert spec["port"] == 15006
    assert "appPort" not in spec
    assert "gateway" not in _agent_node().to_metadata()  # only a gateway writes it
