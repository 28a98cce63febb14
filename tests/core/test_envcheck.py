"""env-check against fake Ascend installs built as real directory trees."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest

from cogvideo_cli.core import envcheck as ec

NPU_SMI_OUTPUT = """\
+------------------------------------------------------------------------------------------------+
| npu-smi 25.5.0                   Version: 25.5.0                                               |
+---------------------------+---------------+----------------------------------------------------+
| NPU   Name                | Health        | Power(W)    Temp(C)           Hugepages-Usage(page)|
| Chip                      | Bus-Id        | AICore(%)   Memory-Usage(MB)  HBM-Usage(MB)        |
+===========================+===============+====================================================+
| 0     910B3               | OK            | 95.7        36                0    / 0             |
| 0                         | 0000:C1:00.0  | 0           0    / 0          3161 / 65536         |
+===========================+===============+====================================================+
| 1     910B3               | {health:<14}| 92.1        37                0    / 0             |
| 0                         | 0000:C2:00.0  | 0           0    / 0          3160 / 65536         |
+===========================+===============+====================================================+
"""


def _executable(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def fake_ascend(root: Path, layout: str = "cann", version: str = "8.5.0") -> Path:
    """A CANN install as the installer leaves it: set_env.sh and a version file."""
    home = root / ("cann" if layout == "cann" else "ascend-toolkit")
    home.mkdir(parents=True)
    (home / "set_env.sh").write_text(
        f"export ASCEND_TOOLKIT_HOME={home}\n"
        f"export LD_LIBRARY_PATH={home}/lib64:$LD_LIBRARY_PATH\n")
    arch = home / "x86_64-linux"
    arch.mkdir()
    (arch / "ascend_toolkit_install.info").write_text(
        f"package_name=Ascend-cann-toolkit\nversion={version}\narch=x86_64\nos=linux\n")
    (home / "lib64").mkdir()
    return home


def fake_npu_smi(bin_dir: Path, health: str = "OK", rc: int = 0) -> Path:
    text = NPU_SMI_OUTPUT.replace("{health:<14}", f"{health:<14}")
    return _executable(bin_dir / "npu-smi",
                       f"#!/bin/sh\ncat <<'EOF'\n{text}EOF\nexit {rc}\n")


def ctx_for(tmp_path: Path, environ: dict | None = None, **kw) -> ec.Context:
    env = {"PATH": os.environ["PATH"]}
    env.update(environ or {})
    kw.setdefault("ascend_root", tmp_path / "Ascend")
    return ec.Context(environ=env, workspace_root=tmp_path, **kw)


def by_name(rows):
    return {r.check: r for r in rows}


def test_sourced_cann_8_5(tmp_path):
    home = fake_ascend(tmp_path / "Ascend")
    env = {"ASCEND_TOOLKIT_HOME": str(home), "LD_LIBRARY_PATH": f"{home}/lib64:/usr/lib"}
    rows = by_name(ec.check_cann(ctx_for(tmp_path, env)))
    assert rows["CANN"].status == ec.OK and "version 8.5.0" in rows["CANN"].found
    assert rows["CANN sourced"].status == ec.OK


def test_cann_not_sourced_names_the_script(tmp_path):
    home = fake_ascend(tmp_path / "Ascend")
    rows = by_name(ec.check_cann(ctx_for(tmp_path)))
    assert rows["CANN sourced"].status == ec.FAIL
    assert rows["CANN sourced"].fix == f"source {home}/set_env.sh"


def test_old_toolkit_path_warns(tmp_path):
    fake_ascend(tmp_path / "Ascend", layout="toolkit", version="8.3.RC1")
    row = by_name(ec.check_cann(ctx_for(tmp_path)))["CANN"]
    assert row.status == ec.WARN and "8.3.RC1" in row.found and "cann" in row.fix


def test_no_cann_skips_or_fails_by_backend(tmp_path):
    assert ec.check_cann(ctx_for(tmp_path, backend="diffusers"))[0].status == ec.SKIPPED
    row = ec.check_cann(ctx_for(tmp_path, backend="mindspeed"))[0]
    assert row.status == ec.FAIL and "install CANN 8.5.0" in row.fix


def test_npu_smi_counts_devices(tmp_path):
    fake_npu_smi(tmp_path / "bin")
    rows = ec.check_npu_smi(ctx_for(tmp_path, {"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin"}))
    assert rows[0].status == ec.OK and rows[0].found == "2 x 910B3"


def test_npu_smi_unhealthy_and_broken(tmp_path):
    fake_npu_smi(tmp_path / "bin", health="Alarm")
    path = {"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin"}
    row = ec.check_npu_smi(ctx_for(tmp_path, path))[0]
    assert row.status == ec.WARN and "1 (Alarm)" in row.found
    fake_npu_smi(tmp_path / "bin", rc=1)
    row = ec.check_npu_smi(ctx_for(tmp_path, path))[0]
    assert row.status == ec.FAIL and "exit code 1" in row.found
    row = ec.check_npu_smi(ctx_for(tmp_path, {"PATH": "/nonexistent"}, backend="mindspeed"))[0]
    assert row.status == ec.FAIL and "driver/tools" in row.fix


@pytest.mark.parametrize("name,value,ok", [
    ("HCCL_CONNECT_TIMEOUT", "60", False), ("HCCL_CONNECT_TIMEOUT", "1200", True),
    ("HCCL_CONNECT_TIMEOUT", "7201", False), ("HCCL_EXEC_TIMEOUT", "67", False),
    ("HCCL_EXEC_TIMEOUT", "17340", True), ("ACLNN_CACHE_LIMIT", "0", False),
    ("ACLNN_CACHE_LIMIT", "10000000", True), ("TASK_QUEUE_ENABLE", "yes", False),
    ("TASK_QUEUE_ENABLE", "2", True), ("CPU_AFFINITY_CONF", "3", False),
    ("NPU_ASD_ENABLE", "3", True), ("NPU_ASD_ENABLE", "4", False),
    ("ASCEND_GLOBAL_LOG_LEVEL", "5", False), ("ASCEND_GLOBAL_LOG_LEVEL", "3", True),
    ("PYTORCH_NPU_ALLOC_CONF", "expandable_segments:True", True),
    ("PYTORCH_NPU_ALLOC_CONF", "expandable_segments", False),
    ("PYTORCH_NPU_ALLOC_CONF", "expandable_segments:Yes", False),
    ("PYTORCH_NPU_ALLOC_CONF", "max_split_size_mb:128,garbage_collection_threshold:0.6", True),
    ("TOKENIZERS_PARALLELISM", "false", True), ("COMBINED_ENABLE", "on", False),
])
def test_env_values(tmp_path, name, value, ok):
    rows = by_name(ec.check_env_vars(ctx_for(tmp_path, {name: value})))
    row = rows[f"${name}"]
    assert row.status == (ec.OK if ok else ec.FAIL)
    if not ok:
        assert repr(value) == row.found and row.fix.startswith(f"export {name} to ")


def test_hccl_timeout_message(tmp_path):
    row = by_name(ec.check_env_vars(ctx_for(tmp_path, {"HCCL_CONNECT_TIMEOUT": "60"})))[
        "$HCCL_CONNECT_TIMEOUT"]
    assert row.expected == "120..7200"
    assert row.fix == "export HCCL_CONNECT_TIMEOUT to an integer from 120 to 7200, or unset it"


def test_cuda_max_connections_for_parallel_runs(tmp_path):
    name = "$CUDA_DEVICE_MAX_CONNECTIONS"
    assert by_name(ec.check_env_vars(ctx_for(tmp_path, tp=2)))[name].status == ec.WARN
    bad = by_name(ec.check_env_vars(ctx_for(tmp_path, {"CUDA_DEVICE_MAX_CONNECTIONS": "8"},
                                            cp=2)))[name]
    assert bad.status == ec.FAIL and bad.fix == "export CUDA_DEVICE_MAX_CONNECTIONS=1"
    good = by_name(ec.check_env_vars(ctx_for(tmp_path, {"CUDA_DEVICE_MAX_CONNECTIONS": "1"},
                                             tp=4)))[name]
    assert good.status == ec.OK


def fake_mindspeed_mm(root: Path, megatron=(0, 12, 1), branch="2.3.0") -> Path:
    for rel in ec.ENTRY_SCRIPTS:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("# stand-in\n")
    info = root / "megatron" / "core" / "package_info.py"
    info.parent.mkdir(parents=True)
    info.write_text("MAJOR = {}\nMINOR = {}\nPATCH = {}\nPRE_RELEASE = ''\n".format(*megatron))
    git = root / ".git"
    (git / "refs" / "heads").mkdir(parents=True)
    (git / "HEAD").write_text(f"ref: refs/heads/{branch}\n")
    (git / "refs" / "heads" / branch).write_text("0123456789abcdef0123456789abcdef01234567\n")
    return root


def test_mindspeed_mm_checkout_ok(tmp_path):
    root = fake_mindspeed_mm(tmp_path / "MindSpeed-MM")
    rows = by_name(ec.check_mindspeed_mm(ctx_for(tmp_path, mindspeed_mm=root)))
    assert rows["MindSpeed-MM checkout"].status == ec.OK
    assert "branch 2.3.0, commit 0123456789ab" in rows["MindSpeed-MM checkout"].found
    assert rows["Megatron copy"].status == ec.OK and rows["Megatron copy"].found.endswith("0.12.1")


def test_mindspeed_mm_wrong_megatron_and_missing_scripts(tmp_path):
    root = fake_mindspeed_mm(tmp_path / "MM", megatron=(0, 8, 0), branch="master")
    (root / "inference_sora.py").unlink()
    rows = by_name(ec.check_mindspeed_mm(ctx_for(tmp_path, mindspeed_mm=root)))
    assert rows["MindSpeed-MM checkout"].status == ec.FAIL
    assert "missing inference_sora.py" in rows["MindSpeed-MM checkout"].found
    assert rows["Megatron copy"].status == ec.FAIL and "0.8.0" in rows["Megatron copy"].found
    assert "core_v0.12.1" in rows["Megatron copy"].fix


def _fake_dist(site: Path, name: str, version: str, module: str | None = None) -> None:
    info = site / f"{name}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    if module is not None:
        (site / name).mkdir()
        (site / name / "__init__.py").write_text(module)


def test_torch_npu_that_does_not_pair_with_torch(tmp_path, monkeypatch):
    _fake_dist(tmp_path / "site", "torch_npu", "2.6.0.post3")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    row = by_name(ec.check_torch(ctx_for(tmp_path, backend="mindspeed")))["torch_npu"]
    assert row.status == ec.FAIL and "2.6.0.post3 with torch" in row.found
    assert "torch_npu==" in row.fix


def test_torch_npu_runtime_probe_in_child_process(tmp_path, monkeypatch):
    import importlib.metadata

    torch_base = ec._base(importlib.metadata.version("torch"))
    # A stand-in torch_npu that reports two NPUs: NPUs cannot exist on this machine.
    module = ("import torch, types\n"
              "torch.npu = types.SimpleNamespace(is_available=lambda: True, "
              "device_count=lambda: 2)\n")
    _fake_dist(tmp_path / "site", "torch_npu", torch_base + ".post1", module)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    env = {"PYTHONPATH": str(tmp_path / "site")}
    row = by_name(ec.check_torch(ctx_for(tmp_path, env, backend="mindspeed")))["torch_npu"]
    assert row.status == ec.OK and "2 NPU(s) visible" in row.found


def test_assets_recorded(tmp_path):
    t5 = tmp_path / "w" / "text_encoder"
    t5.mkdir(parents=True)
    (t5 / "config.json").write_text("{}")
    tok = tmp_path / "w" / "tokenizer"
    tok.mkdir()
    rows = by_name(ec.check_assets(ctx_for(tmp_path, recorded={"t5": t5, "tokenizer": tok})))
    assert rows["T5 text encoder"].status == ec.FAIL and "model.safetensors" in rows[
        "T5 text encoder"].found
    (t5 / "model.safetensors.index.json").write_text("{}")
    (tok / "spiece.model").write_bytes(b"x")
    (tok / "tokenizer_config.json").write_text("{}")
    rows = by_name(ec.check_assets(ctx_for(tmp_path, recorded={"t5": t5, "tokenizer": tok})))
    assert rows["T5 text encoder"].status == ec.OK and rows["tokenizer"].status == ec.OK
    assert rows["VAE"].status == ec.SKIPPED


def test_hf_endpoint_with_xet(tmp_path, monkeypatch):
    _fake_dist(tmp_path / "site", "hf_xet", "1.1.0")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    row = ec.check_hf_endpoint(ctx_for(tmp_path, {"HF_ENDPOINT": "http://127.0.0.1:9"}))[0]
    assert row.status == ec.WARN and "HF_HUB_DISABLE_XET=1" in row.fix
    row = ec.check_hf_endpoint(ctx_for(tmp_path, {"HF_ENDPOINT": "http://127.0.0.1:9",
                                                  "HF_HUB_DISABLE_XET": "1"}))[0]
    assert row.status == ec.OK


def test_online_probe_against_local_server(tmp_path):
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(200 if self.path == "/api/models/THUDM/CogVideoX-5b" else 404)
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        row = ec.check_online(ctx_for(tmp_path, {"HF_ENDPOINT": url}))[0]
        assert row.status == ec.OK and "answered 200" in row.found
    finally:
        server.shutdown()
    row = ec.check_online(ctx_for(tmp_path, {"HF_ENDPOINT": url}))[0]
    assert row.status == ec.FAIL and "HF_ENDPOINT" in row.fix


def test_cli_on_this_machine_and_with_fake_ascend(cli, tmp_path):
    result = cli("--json", "env-check", "--backend", "diffusers")
    report = json.loads(result.stdout)
    assert result.exit_code == (0 if report["ok"] else 1)
    names = {r["check"]: r for r in report["checks"]}
    assert names["CANN"]["status"] == "skipped" and names["npu-smi"]["status"] == "skipped"
    assert names["python"]["found"] == ".".join(map(str, sys.version_info[:3]))

    home = fake_ascend(tmp_path / "Ascend")
    fake_npu_smi(tmp_path / "bin")
    root = fake_mindspeed_mm(tmp_path / "MM")
    env = {"PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}", "ASCEND_TOOLKIT_HOME": str(home),
           "LD_LIBRARY_PATH": f"{home}/lib64", "HCCL_CONNECT_TIMEOUT": "60",
           "TASK_QUEUE_ENABLE": "yes", "COGVX_ASCEND_ROOT": str(tmp_path / "Ascend")}
    result = cli("--json", "env-check", "--mindspeed-mm", root, env=env)
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    names = {r["check"]: r for r in report["checks"]}
    assert report["backend"] == "mindspeed"
    assert names["NPU devices"]["status"] == "ok" and names["CANN sourced"]["status"] == "ok"
    assert names["$HCCL_CONNECT_TIMEOUT"]["status"] == "fail"
    assert names["$TASK_QUEUE_ENABLE"]["status"] == "fail"
    assert names["torch_npu"]["status"] == "fail"  # not installed, and MindSpeed-MM needs it
    assert names["MindSpeed-MM checkout"]["status"] == "ok"


def test_cli_table_for_people(cli):
    result = cli("env-check", "--backend", "mindspeed")
    assert result.exit_code == 1
    assert "cogvx env-check (backend: mindspeed)" in result.stdout
    assert "torch_npu" in result.stdout and "fail" in result.stdout


@pytest.mark.parametrize("value", ["\u0663\u0660\u0660", " 200", "200 ", "+200"])
def test_env_integers_are_plain_ascii(tmp_path, value):
    row = by_name(ec.check_env_vars(ctx_for(tmp_path, {"HCCL_CONNECT_TIMEOUT": value})))[
        "$HCCL_CONNECT_TIMEOUT"]
    assert row.status == ec.FAIL


def test_checkout_without_git_warns(tmp_path):
    root = fake_mindspeed_mm(tmp_path / "MM")
    import shutil

    shutil.rmtree(root / ".git")
    row = by_name(ec.check_mindspeed_mm(ctx_for(tmp_path, mindspeed_mm=root)))[
        "MindSpeed-MM checkout"]
    assert row.status == ec.WARN and "branch ?" in row.found and "git checkout" in row.fix
