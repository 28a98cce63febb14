"""Fixtures for the download tests: the fake hub on 127.0.0.1 and an environment that
points every endpoint at it, so no test can reach the internet."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import fakehub_content as hub_content  # noqa: E402
import fakehub  # noqa: E402


@pytest.fixture(scope="session")
def hub_bytes() -> dict:
    """The fake repositories' files (built once: torch.save, sentencepiece training)."""
    return hub_content.build_all()


@pytest.fixture
def hub(hub_bytes, monkeypatch, tmp_path):
    """A fresh fake hub + cloud; HF_ENDPOINT and COGVX_CLOUD_URL point at it."""
    server = fakehub.FakeHub()
    hub_content.install(server, hub_bytes)
    url = server.start()
    for name, value in local_env(url, tmp_path).items():
        monkeypatch.setenv(name, value)
    # set (not deleted) so that monkeypatch removes what the mirror note sets
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "")
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE",
                 "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr("cogvideo_cli.hub.transfer.RETRY_DELAYS", (0.05, 0.1, 0.2))
    yield server
    server.stop()


def local_env(url: str, tmp_path: Path) -> dict[str, str]:
    """Environment that sends the hub, the cloud and the token lookup to local places."""
    return {"HF_ENDPOINT": url, "COGVX_CLOUD_URL": url, "HF_HOME": str(tmp_path / "hf-home"),
            "HF_HUB_DISABLE_TELEMETRY": "1",  # no side request for huggingface_hub's UA
            "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch):
    """Fail any connection that is not to 127.0.0.1: a test must never reach the internet."""
    import socket

    real_connect = socket.socket.connect

    def guarded(sock, address):
        host = address[0] if isinstance(address, tuple) else address
        if isinstance(host, str) and host not in ("127.0.0.1", "::1", "localhost") \
                and sock.family in (socket.AF_INET, socket.AF_INET6):
            raise AssertionError(f"test tried to connect to {address}")
        return real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)
