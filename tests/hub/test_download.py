"""The download engine against the fake hub and cloud on 127.0.0.1."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fakehub import HTML_PAGE, Fault
from fakehub_content import SAT10_LINKS, SAT_REPO, VAE_LINK, vae_zip

from cogvideo_cli.core.errors import DownloadError, UsageError
from cogvideo_cli.hub.download import (check_space, plan_download, run_download,
                                       verify_download)
from cogvideo_cli.hub.manifest import WeightsLayout
from cogvideo_cli.hub.record import RECORD_NAME, SCRATCH_NAME

REPO_ROOT = Path(__file__).resolve().parents[2]
VARIANTS = ("t2v-1.0", "i2v-1.0", "t2v-1.5", "i2v-1.5")
DIFFUSERS_REPO = {"t2v-1.0": "THUDM/CogVideoX-5b", "i2v-1.0": "THUDM/CogVideoX-5b-I2V",
                  "t2v-1.5": "THUDM/CogVideoX1.5-5B", "i2v-1.5": "THUDM/CogVideoX1.5-5B-I2V"}
T5_FILES = ("config.json", "model-00001-of-00002.safetensors",
            "model-00002-of-00002.safetensors", "model.safetensors.index.json")
TOKENIZER_FILES = ("added_tokens.json", "special_tokens_map.json", "spiece.model",
                   "tokenizer_config.json")


def download(variant: str, target: Path, fmt: str = "sat", **options) -> dict:
    return run_download(plan_download(variant, fmt, target=target, **options))


def files_under(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def sat_expected(variant: str, hub_bytes: dict) -> dict[str, bytes]:
    """What the section-11 layout must hold, byte for byte."""
    task, version = variant.split("-")
    t5 = hub_bytes["repos"]["THUDM/CogVideoX-5b"]
    files = {f"text_encoder/{n}": t5[f"text_encoder/{n}"] for n in T5_FILES}
    files |= {f"tokenizer/{n}": t5[f"tokenizer/{n}"] for n in TOKENIZER_FILES}
    files["vae/3d-vae.pt"] = hub_bytes["vae"]
    if version == "1.5":
        sat = hub_bytes["repos"][SAT_REPO]
        files["transformer/1000/mp_rank_00_model_states.pt"] = \
            sat[f"transformer_{task}/1000/mp_rank_00_model_states.pt"]
        files["transformer/latest"] = b"1000"
    else:
        iteration = "1000" if task == "t2v" else "1"
        files[f"transformer/{iteration}/mp_rank_00_model_states.pt"] = hub_bytes["sat10"][task]
        files["transformer/latest"] = iteration.encode()
    return files


@pytest.mark.parametrize("variant", VARIANTS)
def test_sat_layout_is_section_11(hub, hub_bytes, tmp_path, variant):
    target = tmp_path / "w"
    result = download(variant, target)

    expected = sat_expected(variant, hub_bytes)
    assert files_under(target) == set(expected) | {RECORD_NAME}
    for name, data in expected.items():
        assert (target / name).read_bytes() == data, name
    assert not (target / SCRATCH_NAME).exists()
    layout = WeightsLayout(target, "sat")
    assert layout.sat_checkpoint_file().read_bytes() == \
        expected[layout.sat_checkpoint_file().relative_to(target).as_posix()]
    assert result["workspace"]["vae"] == str(target / "vae" / "3d-vae.pt")
    assert result["workspace"]["t5"] == str(target / "text_encoder")
    assert verify_download(target)["ok"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_diffusers_layout_is_the_whole_repository(hub, hub_bytes, tmp_path, variant):
    target = tmp_path / "d"
    result = download(variant, target, fmt="diffusers")

    repo = hub_bytes["repos"][DIFFUSERS_REPO[variant]]
    assert files_under(target) == set(repo) | {RECORD_NAME}
    for name, data in repo.items():
        assert (target / name).read_bytes() == data, name
    assert result["workspace"]["diffusers"] == str(target)
    assert result["workspace"]["transformer"] == str(target / "transformer")
    assert not any("cloud" in r.path or "seafhttp" in r.path for r in hub.log)


def test_downloaded_files_load_in_their_formats(hub, tmp_path):
    import sentencepiece as spm
    import torch
    from safetensors import safe_open

    target = tmp_path / "w"
    download("i2v-1.5", target)
    states = torch.load(WeightsLayout(target, "sat").sat_checkpoint_file(), weights_only=True)
    assert any(k.startswith("model.diffusion_model.") for k in states["module"])
    assert "state_dict" in torch.load(target / "vae/3d-vae.pt", weights_only=True)
    tokenizer = spm.SentencePieceProcessor(model_file=str(target / "tokenizer/spiece.model"))
    assert tokenizer.encode("a red cat") != []
    index = json.loads((target / "text_encoder/model.safetensors.index.json").read_text())
    for key, shard in index["weight_map"].items():
        with safe_open(target / "text_encoder" / shard, "pt") as handle:
            assert key in handle.keys()


def test_components_take_a_subset_and_skip_the_rest(hub, tmp_path):
    target = tmp_path / "w"
    download("t2v-1.5", target, components="vae,tokenizer")
    assert files_under(target) == {"vae/3d-vae.pt", RECORD_NAME} | {
        f"tokenizer/{n}" for n in TOKENIZER_FILES}
    assert not hub.requests_for("transformer_t2v")
    assert not hub.requests_for("t5-v1_1-xxl")


def test_a_second_run_fetches_nothing(hub, tmp_path):
    target = tmp_path / "w"
    download("t2v-1.0", target)
    before = len(hub.log)
    plan = plan_download("t2v-1.0", target=target)
    assert {f.status for f in plan.files} == {"present"}
    result = run_download(plan)
    assert result["fetched"] == []
    downloads = [r for r in hub.log[before:] if "/resolve/" in r.path or "seafhttp" in r.path]
    assert downloads == []


def test_dry_run_lists_every_file_and_writes_nothing(hub, hub_bytes, tmp_path):
    target = tmp_path / "w"
    plan = plan_download("t2v-1.5", "sat", target=target).to_dict()
    rows = {row["path"]: row for row in plan["files"]}
    pt = "transformer/1000/mp_rank_00_model_states.pt"
    assert rows[pt]["size"] == len(hub_bytes["repos"][SAT_REPO][f"transformer_t2v/1000/{pt[17:]}"])
    assert rows[pt]["verify"] == "sha256" and rows[pt]["status"] == "fetch"
    assert rows["text_encoder/config.json"]["verify"] == "git-sha1"
    assert plan["fetch_bytes"] == sum(r["size"] for r in plan["files"])
    assert not target.exists()


def test_a_download_killed_halfway_resumes_and_ends_verified(hub, hub_bytes, tmp_path):
    """Really SIGKILL a `cogvx download` in the middle of a file, then run it again."""
    name = "transformer_t2v/1000/mp_rank_00_model_states.pt"
    data = hub_bytes["repos"][SAT_REPO][name]
    half = len(data) // 2
    hub.faults[name] = Fault(after=half, mode="stall")
    target = tmp_path / "w"
    part = target / SCRATCH_NAME / "transformer/1000/mp_rank_00_model_states.pt.part"
    child = subprocess.Popen(
        [sys.executable, "-m", "cogvideo_cli", "-q", "download", "t2v-1.5", "--target",
         str(target)], cwd=REPO_ROOT, env=dict(os.environ), stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE)
    try:
        _wait_for(lambda: part.exists() and part.stat().st_size >= half, child)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        hub.faults[name].release.set()
    assert part.stat().st_size == half
    assert not (target / "transformer/1000/mp_rank_00_model_states.pt").exists()

    result = download("t2v-1.5", target)
    cdn = hub.requests_for("/cdn-lfs/" + hashlib.sha256(data).hexdigest())
    assert cdn[-1].range == f"bytes={half}-"
    assert (target / "transformer/1000/mp_rank_00_model_states.pt").read_bytes() == data
    assert "transformer/1000/mp_rank_00_model_states.pt" in result["fetched"]
    assert verify_download(target)["ok"]


def _wait_for(condition, child: subprocess.Popen, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if child.poll() is not None:
            pytest.fail(f"download ended early: {child.stderr.read().decode()}")
        if time.monotonic() > deadline:
            pytest.fail("the download never reached the middle of the file")
        time.sleep(0.05)


def test_a_connection_cut_mid_stream_resumes_with_range(hub, hub_bytes, tmp_path):
    hub.faults["vae.zip"] = Fault(after=5000, mode="abort")
    target = tmp_path / "w"
    download("i2v-1.0", target, components="vae")
    ranges = [r.range for r in hub.requests_for("/seafhttp/files/") if "vae.zip" in r.path]
    assert ranges == [None, "bytes=5000-"]
    assert (target / "vae/3d-vae.pt").read_bytes() == hub_bytes["vae"]


def test_a_flipped_byte_is_found_and_only_that_file_is_fetched_again(hub, tmp_path):
    target = tmp_path / "w"
    download("t2v-1.5", target)
    shard = target / "text_encoder/model-00001-of-00002.safetensors"
    good = shard.read_bytes()
    with open(shard, "r+b") as handle:
        handle.seek(len(good) // 2)
        handle.write(bytes([good[len(good) // 2] ^ 0xFF]))

    report = verify_download(target)
    assert not report["ok"]
    assert [b["path"] for b in report["bad"]] == ["text_encoder/model-00001-of-00002.safetensors"]

    before = len(hub.log)
    result = download("t2v-1.5", target)
    assert result["repaired"] == ["text_encoder/model-00001-of-00002.safetensors"]
    assert result["fetched"] == ["text_encoder/model-00001-of-00002.safetensors"]
    fetched = [r.path for r in hub.log[before:] if "/resolve/" in r.path]
    assert len(fetched) == 1 and fetched[0].endswith("model-00001-of-00002.safetensors")
    assert shard.read_bytes() == good
    assert verify_download(target)["ok"]


def test_an_html_page_instead_of_the_zip_is_refused(hub, tmp_path):
    hub.add_cloud(VAE_LINK, "vae.zip", HTML_PAGE, "text/html; charset=utf-8")
    target = tmp_path / "w"
    with pytest.raises(DownloadError, match="HTML page instead of the zip") as caught:
        download("t2v-1.0", target, components="vae")
    assert "browser" in caught.value.fix
    assert not (target / "vae/3d-vae.pt").exists()


def test_an_html_page_labelled_as_a_file_is_refused_by_its_bytes(hub, tmp_path):
    hub.add_cloud(VAE_LINK, "vae.zip", HTML_PAGE, "application/octet-stream")
    target = tmp_path / "w"
    with pytest.raises(DownloadError, match="gave an HTML page, not the expected zip"):
        download("t2v-1.0", target, components="vae")
    assert not list((target / SCRATCH_NAME).rglob("*.part"))  # not kept to be "resumed"


def test_a_zip_entry_leaving_the_folder_is_refused(hub, hub_bytes, tmp_path):
    evil = vae_zip(hub_bytes["vae"], extra={"../../escaped.txt": b"owned"})
    hub.add_cloud(VAE_LINK, "vae.zip", evil, "application/zip")
    target = tmp_path / "w"
    with pytest.raises(DownloadError, match="'..' part") as caught:
        download("t2v-1.0", target, components="vae")
    assert caught.value.value == "../../escaped.txt"
    assert not (target / "vae/3d-vae.pt").exists()
    assert not list(tmp_path.rglob("escaped.txt"))


def test_the_cloud_transformer_must_be_a_torch_file(hub, tmp_path):
    hub.add_cloud(SAT10_LINKS["t2v"], "mp_rank_00_model_states-t2v.pt", b"not a checkpoint")
    with pytest.raises(DownloadError, match="not the expected torch checkpoint"):
        download("t2v-1.0", tmp_path / "w", components="transformer")


def test_a_vae_placed_by_hand_is_kept_after_a_format_check(hub, hub_bytes, tmp_path):
    target = tmp_path / "w"
    (target / "vae").mkdir(parents=True)
    (target / "vae/3d-vae.pt").write_bytes(hub_bytes["vae"])
    result = download("t2v-1.0", target, components="vae")
    assert result["kept_unrecorded"] == ["vae/3d-vae.pt"] and result["fetched"] == []
    assert not hub.requests_for("seafhttp")


def test_no_reachable_endpoint_names_hf_endpoint(hub, tmp_path, monkeypatch):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    with pytest.raises(DownloadError) as caught:
        plan_download("t2v-1.5", target=tmp_path / "w")
    text = str(caught.value)
    assert f"http://127.0.0.1:{port} (from HF_ENDPOINT)" in text
    assert "export HF_ENDPOINT=" in text
    assert not (tmp_path / "w").exists()


def test_offline_mode_is_named(hub, tmp_path, monkeypatch):
    monkeypatch.setattr("huggingface_hub.constants.is_offline_mode", lambda: True)
    with pytest.raises(DownloadError, match="HF_HUB_OFFLINE"):
        plan_download("t2v-1.5", target=tmp_path / "w")


def test_a_gated_repository_asks_for_a_token(hub, tmp_path):
    hub.token = "hf_test_secret"
    with pytest.raises(DownloadError, match="refused access") as caught:
        plan_download("t2v-1.5", target=tmp_path / "w")
    assert "HF_TOKEN" in caught.value.fix


def test_the_token_goes_to_the_hub_only_and_is_never_recorded(hub, tmp_path, monkeypatch):
    hub.token = "hf_test_secret"
    monkeypatch.setenv("HF_TOKEN", hub.token)
    target = tmp_path / "w"
    plan = plan_download("t2v-1.0", target=target)
    assert "using the Hugging Face token from HF_TOKEN" in plan.notes
    run_download(plan)
    hub_calls = [r for r in hub.log if r.path.startswith(("/api/models", "/THUDM"))]
    cloud_calls = [r for r in hub.log if r.path.startswith(("/f/", "/d/", "/seafhttp"))]
    assert hub_calls and all(r.authorized for r in hub_calls)
    assert cloud_calls and not any(r.authorized for r in cloud_calls)
    assert hub.token not in (target / RECORD_NAME).read_text()
    assert all(hub.token not in note for note in plan.notes)


def test_unknown_variant_lists_the_known_ones(tmp_path):
    with pytest.raises(UsageError) as caught:
        plan_download("t2v-2.0", target=tmp_path / "w")
    assert caught.value.exit_code == 2
    for name in VARIANTS:
        assert name in caught.value.fix


def test_bad_format_and_components_are_usage_errors(tmp_path):
    with pytest.raises(UsageError, match="format"):
        plan_download("t2v-1.5", "gguf", target=tmp_path)
    with pytest.raises(UsageError, match="component 'unet'"):
        plan_download("t2v-1.5", components="vae,unet", target=tmp_path)
    for empty in (",", " , "):
        with pytest.raises(UsageError, match="names no component") as caught:
            plan_download("t2v-1.5", components=empty, target=tmp_path)
        assert "transformer,vae,t5,tokenizer" in caught.value.fix


def test_free_disk_is_checked_before_any_byte_is_written(hub, tmp_path):
    target = tmp_path / "w"
    plan = plan_download("t2v-1.5", target=target)
    with pytest.raises(DownloadError, match="needs .* free") as caught:
        check_space(plan, free=lambda path: 1024)
    assert "--target" in caught.value.fix
    check_space(plan, free=lambda path: 1 << 40)


def test_the_fake_hub_answers_huggingface_hub_itself(hub, hub_bytes, tmp_path):
    """The server is realistic enough for hf_hub_download (HEAD, redirects, X-Linked-*)."""
    from huggingface_hub import hf_hub_download

    path = hf_hub_download(SAT_REPO, "vae/3d-vae.pt", endpoint=hub.url,
                           local_dir=tmp_path / "hf")
    assert Path(path).read_bytes() == hub_bytes["vae"]
    head = hub.requests_for("/resolve/main/vae/3d-vae.pt", method="HEAD")
    assert head, "huggingface_hub asks with HEAD first"


def test_links_and_absolute_paths_in_a_zip_are_refused(tmp_path):
    import stat
    import zipfile

    from cogvideo_cli.hub.archive import check_archive

    for name, mode in (("vae/link.pt", stat.S_IFLNK | 0o777), ("/etc/passwd", 0o644),
                       ("vae/fifo", stat.S_IFIFO | 0o644)):
        path = tmp_path / "x.zip"
        with zipfile.ZipFile(path, "w") as archive:
            info = zipfile.ZipInfo(name)
            info.external_attr = mode << 16
            archive.writestr(info, b"/etc/passwd")
        with pytest.raises(DownloadError, match="nothing was extracted"):
            check_archive(path, "test")
