"""What a joining agent decides before it talks to anyone: the fingerprint it pins,
the bundle it trusts, its token, and its address."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes

from gossamer.agent.join import JoinError, TokenFile, detect_address, join_token, trust_bundle
from gossamer.ca import fingerprint, pki

NOW = datetime.now(UTC)
ROOT_A = pki.generate_root("gossamer.local", NOW)
ROOT_B = pki.generate_root("gossamer.local", NOW)


def test_a_fingerprint_is_read_as_openssl_and_the_cli_print_it() -> None:
    digest = ROOT_A.cert.fingerprint(hashes.SHA256())
    openssl = ":".join(f"{b:02X}" for b in digest)  # openssl x509 -fingerprint -sha256
    for text in (fingerprint.show(digest), digest.hex(), digest.hex().upper(), openssl,
                 f"  {openssl}\n"):
        assert fingerprint.parse(text) == digest
    for bad in ("", "sha256:", digest.hex()[:-1], "sha1:" + digest.hex(), digest.hex() + "00"):
        with pytest.raises(fingerprint.BadFingerprint):
            fingerprint.parse(bad)


def test_a_pin_matches_any_root_of_the_bundle_and_nothing_else() -> None:
    rotating = ROOT_A.cert_pem() + ROOT_B.cert_pem()  # two roots during a rotation
    pin_a, pin_b = (fingerprint.parse(r.fingerprint()) for r in (ROOT_A, ROOT_B))
    assert fingerprint.pinned(rotating, pin_a)
    assert fingerprint.pinned(rotating, pin_b)
    assert not fingerprint.pinned(ROOT_B.cert_pem(), pin_a)
    assert fingerprint.of_bundle(rotating) == [pin_a, pin_b]
    with pytest.raises(fingerprint.BadBundle):
        fingerprint.of_bundle("no certificate here")


async def test_the_bundle_comes_from_one_source(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text(ROOT_A.cert_pem())
    assert await trust_bundle("https://cp:15080", ca, None, 1) == ROOT_A.cert_pem()
    assert await trust_bundle("http://127.0.0.1:15080", None, None, 1) is None
    with pytest.raises(JoinError, match="not both"):
        await trust_bundle("https://cp:15080", ca, ROOT_A.fingerprint(), 1)
    with pytest.raises(JoinError, match="serves TLS: give --ca-file"):
        await trust_bundle("https://cp:15080", None, None, 1)
    with pytest.raises(JoinError, match="--ca-fingerprint: 'xyz' is not a SHA-256"):
        await trust_bundle("https://cp:15080", None, "xyz", 1)
    not_pem = tmp_path / "junk.pem"
    not_pem.write_text("junk")
    with pytest.raises(JoinError, match=f"^--ca-file {not_pem}: not a PEM certificate bundle$"):
        await trust_bundle("https://cp:15080", not_pem, None, 1)
    with pytest.raises(JoinError, match="cannot read --ca-file"):
        await trust_bundle("https://cp:15080", tmp_path / "missing.pem", None, 1)


def test_the_token_file_wins_over_the_shells_token(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOSSAMER_TOKEN", "gst_from_the_shell")
    token_file = tmp_path / "token"
    token_file.write_text("gst_from_the_file\n")
    assert join_token(None, token_file) == "gst_from_the_file"
    assert join_token(None, None) == "gst_from_the_shell"
    assert join_token("gst_flag", None) == "gst_flag"
    with pytest.raises(JoinError, match="not both"):
        join_token("gst_flag", token_file)
    token_file.write_text("\n")
    with pytest.raises(JoinError, match="is empty"):
        join_token(None, token_file)
    with pytest.raises(JoinError, match="cannot read --token-file"):
        join_token(None, tmp_path / "missing")


def test_a_loopback_control_plane_means_a_loopback_workload() -> None:
    for url in ("http://127.0.0.1:15080", "https://localhost:15080", "http://127.0.0.5"):
        assert detect_address(url) == "127.0.0.1"
    with pytest.raises(JoinError, match="give --address"):
        detect_address("https://no-such-host.invalid:15080")


def _kubelet_swap(volume: Path, token: str, generation: int) -> Path:
    """A projected volume as kubelet writes it: `token` -> `..data/token`, `..data` a
    link swapped atomically to a new timestamped directory."""
    data = volume / f"..{generation}"
    data.mkdir()
    (data / "token").write_text(token + "\n")
    (volume / "..tmp").symlink_to(data.name)
    (volume / "..tmp").replace(volume / "..data")
    if not (volume / "token").is_symlink():
        (volume / "token").symlink_to("..data/token")
    return volume / "token"


def test_a_token_file_is_read_again_when_kubelet_swaps_it(tmp_path: Path) -> None:
    path = _kubelet_swap(tmp_path, "first", 1)
    token = TokenFile(path, "first")
    assert token() == "first"
    _kubelet_swap(tmp_path, "second", 2)
    assert token() == "second"
    assert token() == "second"
    assert token.reads == 2  # not read again while unchanged
    (tmp_path / "..3").mkdir()
    (tmp_path / "..3" / "token").write_text("")  # an empty token: the last good one
    (tmp_path / "..tmp").symlink_to("..3")
    (tmp_path / "..tmp").replace(tmp_path / "..data")
    assert token() == "second"
    (tmp_path / "..data").unlink()  # gone: the last good one
    assert token() == "second"


async def test_api_calls_present_the_token_of_the_moment(tmp_path: Path) -> None:
    """ControlPlaneClient sends the token file's current token on each request."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from typing import Any

    from gossamer.agent.client import ControlPlaneClient

    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.headers.get("authorization", ""))
            body = json.dumps({"metadata": {"name": "web"}}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    path = _kubelet_swap(tmp_path, "first", 1)
    client = ControlPlaneClient(f"http://127.0.0.1:{server.server_address[1]}",
                                TokenFile(path, "first"))
    try:
        await client.service("default", "web")
        _kubelet_swap(tmp_path, "second", 2)
        await client.service("default", "web")
    finally:
        await client.close()
        server.shutdown()
        server.server_close()
    assert seen == ["Bearer first", "Bearer second"]
