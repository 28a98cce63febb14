"""``cogvx download`` through the CLI, against the fake hub on 127.0.0.1."""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

import pytest

HUB_TESTS = Path(__file__).resolve().parents[1] / "hub"
sys.path.insert(0, str(HUB_TESTS))

import fakehub  # noqa: E402
import fakehub_content  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[2]
SECRET = "hf_cli_test_secret_value"


@pytest.fixture(scope="module")
def hub_bytes() -> dict:
    return fakehub_content.build_all()


@pytest.fixture
def hub(hub_bytes, monkeypatch, tmp_path):
    server = fakehub.FakeHub()
    fakehub_content.install(server, hub_bytes)
    url = server.start()
    monkeypatch.setenv("HF_ENDPOINT", url)
    monkeypatch.setenv("COGVX_CLOUD_URL", url)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("COLUMNS", "200")  # wide enough that paths are not folded
    # set (not deleted) so that monkeypatch removes what the mirror note sets
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "")
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "HTTP_PROXY",
                 "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr("cogvideo_cli.hub.transfer.RETRY_DELAYS", (0.05,))
    yield server
    server.stop()


def read_toml(path: Path) -> dict:
    import tomllib

    return tomllib.loads(path.read_text())


def test_download_fills_the_folder_and_the_workspace(cli, hub, tmp_path):
    result = cli("download", "t2v-1.5")
    assert result.exit_code == 0, result.output
    root = tmp_path / "weights" / "t2v-1.5-sat"
    assert "11 files verified" in result.stdout
    weights = read_toml(tmp_path / "cogvx.toml")["weights"]
    assert weights == {"root": str(root), "format": "sat", "variant": "t2v-1.5",
                       "transformer": str(root / "transformer"),
                       "vae": str(root / "vae" / "3d-vae.pt"),
                       "t5": str(root / "text_encoder"), "tokenizer": str(root / "tokenizer")}
    assert (root / "transformer" / "latest").read_text() == "1000"
    assert (root / "transformer" / "1000" / "mp_rank_00_model_states.pt").is_file()


def test_diffusers_format_records_the_pipeline_folder(cli, hub, tmp_path):
    target = tmp_path / "pipe"
    result = cli("download", "i2v-1.5", "--format", "diffusers", "--target", target)
    assert result.exit_code == 0, result.output
    weights = read_toml(tmp_path / "cogvx.toml")["weights"]
    assert weights["diffusers"] == str(target) and weights["vae"] == str(target / "vae")
    assert (target / "model_index.json").is_file()


def test_dry_run_lists_the_plan_and_writes_nothing(cli, hub, tmp_path):
    result = cli("download", "t2v-1.0", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "mp_rank_00_model_states.pt" in result.stdout and "Nothing was written" in \
        result.stdout
    assert not (tmp_path / "weights").exists() and not (tmp_path / "cogvx.toml").exists()

    as_json = cli("--json", "download", "t2v-1.0", "--dry-run")
    plan = json.loads(as_json.stdout)
    paths = {row["path"]: row for row in plan["files"]}
    assert paths["transformer/1000/mp_rank_00_model_states.pt"]["size"] > 0  # probed
    assert paths["vae/3d-vae.pt"]["verify"] == "format"


def test_verify_only_finds_a_flipped_byte_and_a_rerun_repairs_it(cli, hub, tmp_path):
    assert cli("download", "t2v-1.0").exit_code == 0
    vae = tmp_path / "weights" / "t2v-1.0-sat" / "vae" / "3d-vae.pt"
    data = bytearray(vae.read_bytes())
    data[len(data) // 3] ^= 0x01
    vae.write_bytes(bytes(data))

    found = cli("download", "--verify-only")
    assert found.exit_code == 1
    assert "vae/3d-vae.pt" in found.stderr and "SHA-256" in found.stderr
    assert "cogvx download t2v-1.0 --format sat --target" in found.stderr

    repaired = cli("download", "t2v-1.0")
    assert repaired.exit_code == 0, repaired.output
    assert "1 repaired (vae/3d-vae.pt)" in repaired.stdout
    assert cli("download", "--verify-only").exit_code == 0


@pytest.mark.parametrize("components", [",", " , "])
def test_an_empty_component_list_is_a_usage_error(cli, hub, tmp_path, components):
    result = cli("download", "t2v-1.5", "--components", components)
    assert result.exit_code == 2, result.output
    assert "names no component" in result.stderr
    assert "transformer,vae,t5,tokenizer" in result.stderr
    assert not (tmp_path / "weights").exists() and not (tmp_path / "cogvx.toml").exists()


def test_verify_only_on_a_record_without_files_says_so(cli, tmp_path):
    folder = tmp_path / "w"
    folder.mkdir()
    (folder / "cogvx-download.json").write_text(json.dumps({"variant": "t2v-1.5",
                                                            "files": {}}))
    result = cli("download", "--verify-only", "--target", folder)
    assert result.exit_code == 1
    assert "cogvx-download.json records no files" in result.stderr
    assert "has no cogvx-download.json" not in result.stderr
    (folder / "cogvx-download.json").unlink()
    missing = cli("download", "--verify-only", "--target", folder)
    assert "has no cogvx-download.json" in missing.stderr


@pytest.mark.parametrize("option, env, hint", [
    ("--cloud-url", "COGVX_CLOUD_URL", "https://cloud.tsinghua.edu.cn"),
    ("--endpoint", "HF_ENDPOINT", "https://hf-mirror.com")])
def test_a_url_without_scheme_gets_a_hint_for_its_own_kind(cli, monkeypatch, option, env,
                                                           hint):
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    monkeypatch.delenv("COGVX_CLOUD_URL", raising=False)
    result = cli("download", "t2v-1.0", option, "127.0.0.1:9")
    assert result.exit_code == 2
    text = " ".join(result.stderr.split())
    assert f"from {option}" in text and "http://127.0.0.1:9" in text and hint in text
    wrong = "hf-mirror" if option == "--cloud-url" else "tsinghua"
    assert wrong not in text


def test_unknown_variant_is_a_usage_error_listing_the_known_ones(cli):
    result = cli("download", "t2v-9")
    assert result.exit_code == 2
    for name in ("t2v-1.0", "i2v-1.0", "t2v-1.5", "i2v-1.5"):
        assert name in result.stderr


def test_missing_variant_is_a_usage_error(cli):
    result = cli("download")
    assert result.exit_code == 2
    assert "cogvx download t2v-1.5" in result.stderr


def test_unreachable_endpoint_names_hf_endpoint(cli, hub, monkeypatch):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    result = cli("download", "t2v-1.5")
    assert result.exit_code == 1
    assert "from HF_ENDPOINT" in result.stderr and "export HF_ENDPOINT=" in result.stderr


def test_endpoint_option_wins_and_the_mirror_note_is_shown(cli, hub, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # would fail if used
    result = cli("download", "t2v-1.5", "--components", "vae", "--endpoint", hub.url)
    assert result.exit_code == 0, result.output
    assert "Xet transfers, which bypass mirrors, are off" in " ".join(result.stderr.split())


def test_the_token_is_sent_but_never_printed(cli, hub, monkeypatch, tmp_path):
    hub.token = SECRET
    monkeypatch.setenv("HF_TOKEN", SECRET)
    result = cli("-vv", "--debug", "download", "t2v-1.0", "--components", "t5")
    assert result.exit_code == 0, result.output
    assert "token from HF_TOKEN" in result.stderr
    assert SECRET not in result.output
    assert SECRET not in (tmp_path / "cogvx.toml").read_text()

    monkeypatch.delenv("HF_TOKEN")
    refused = cli("download", "t2v-1.5", "--components", "t5", "--target", tmp_path / "x")
    assert refused.exit_code == 1 and "HF_TOKEN" in refused.stderr


def test_download_help_names_every_option(cli):
    result = cli("download", "--help")
    assert result.exit_code == 0
    for option in ("--format", "--components", "--target", "--endpoint", "--cloud-url",
                   "--verify-only", "--dry-run"):
        assert option in result.stdout
