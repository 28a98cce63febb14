"""Environment probes for ``cogvx env-check``: one function per row, nothing printed.

Each probe returns :class:`Check` rows (check, status, found, expected, fix). Probes read
files, environment variables, package metadata and the output of small subprocesses with
timeouts; nothing here imports torch, torch_npu or any other heavy module into this
process, and nothing touches the network unless ``online`` is asked for.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
import re
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

OK, WARN, FAIL, SKIPPED = "ok", "warn", "fail", "skipped"

# What MindSpeed-MM 2.3.0 runs on (section 7 of the reference).
EXPECTED_TORCH = "2.7.1"
EXPECTED_MEGATRON = "0.12.1"
EXPECTED_MINDSPEED_COMMIT = "5176c6f5f133111e55a404d82bd2dc14a809a6ab"
PINNED = {"transformers": "4.53.0", "diffusers": "0.30.3", "peft": "0.7.1"}
CANN_PATHS = (("8.5 (MindSpeed-MM 2.3.0)", "cann/set_env.sh"),
              ("8.3 and older (MindSpeed-MM 2.2.0, 2.1.0)", "ascend-toolkit/set_env.sh"))
ENTRY_SCRIPTS = ("pretrain_sora.py", "inference_sora.py", "mindspeed_mm/tools/tools.json")
GIB = 1024 ** 3


@dataclass
class Check:
    """One row of the report."""

    check: str
    status: str
    found: str
    expected: str = ""
    fix: str = ""


@dataclass
class Context:
    """Where the probes look; every field can be pointed elsewhere (tests, other hosts)."""

    environ: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    ascend_root: Path = Path("/usr/local/Ascend")
    workspace_root: Path = field(default_factory=Path.cwd)
    mindspeed_mm: Path | None = None
    backend: str = "auto"  # auto, mindspeed or diffusers
    tp: int = 1
    cp: int = 1
    online: bool = False
    python: str = sys.executable
    recorded: dict[str, Path] = field(default_factory=dict)

    @property
    def wants_npu(self) -> bool:
        return self.backend == "mindspeed"


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _base(version: str) -> str:
    """'2.7.1+cpu' and '2.7.1.post2' -> '2.7.1'."""
    match = re.match(r"\d+(\.\d+){0,2}", version)
    return match.group(0) if match else version


def _run(args: list[str], timeout: float = 20.0, env: dict | None = None,
         cwd: Path | None = None) -> tuple[int, str]:
    """Run a small program (argument list, never a shell); (exit code, output)."""
    try:
        proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env,
                              cwd=cwd, check=False)
    except FileNotFoundError:
        return 127, f"{args[0]}: not found"
    except subprocess.TimeoutExpired:
        return 124, f"{args[0]} did not answer within {timeout:.0f} s"
    return proc.returncode, (proc.stdout + proc.stderr).strip()


def _missing_npu_status(ctx: Context) -> str:
    """How to rate a missing Ascend piece: a failure only when MindSpeed-MM is asked for."""
    return FAIL if ctx.wants_npu else SKIPPED


# --- host and Python ------------------------------------------------------------------------

def check_python(ctx: Context) -> list[Check]:
    version = platform.python_version()
    machine = platform.machine()
    rows = []
    if sys.version_info < (3, 10):
        rows.append(Check("python", FAIL, version, "3.10+", "use Python 3.10 or newer"))
    elif sys.version_info[:2] != (3, 10):
        rows.append(Check("python", OK, version, "3.10+ (MindSpeed-MM is tested on 3.10)"))
    else:
        rows.append(Check("python", OK, version, "3.10+"))
    note = "decord has no wheels here; build it from source for MindSpeed-MM" \
        if machine in ("aarch64", "arm64") else ""
    rows.append(Check("architecture", OK, machine, "x86_64 or aarch64", note))
    return rows


def check_torch(ctx: Context) -> list[Check]:
    torch_v = _version("torch")
    npu_v = _version("torch_npu")
    rows = []
    if torch_v is None:
        rows.append(Check("torch", FAIL, "not installed", EXPECTED_TORCH,
                          "pip install torch (torch==2.7.1 for MindSpeed-MM 2.3.0)"))
    elif _base(torch_v) != EXPECTED_TORCH:
        status = FAIL if ctx.wants_npu else WARN
        rows.append(Check("torch", status, torch_v, f"{EXPECTED_TORCH} for MindSpeed-MM 2.3.0",
                          "pip install torch==2.7.1 (other versions are fine for the "
                          "diffusers backend)"))
    else:
        rows.append(Check("torch", OK, torch_v, EXPECTED_TORCH))
    if npu_v is None:
        rows.append(Check("torch_npu", _missing_npu_status(ctx), "not installed",
                          f"{EXPECTED_TORCH} (PTA 7.3.0)",
                          "on an Ascend host: pip install torch_npu==2.7.1 "
                          "(the PTA 7.3.0 wheel for your Python and architecture)"))
    elif torch_v is not None and _base(npu_v) != _base(torch_v):
        rows.append(Check("torch_npu", FAIL, f"{npu_v} with torch {torch_v}",
                          "torch_npu built for the installed torch",
                          f"pip install torch_npu=={_base(torch_v)} or "
                          f"torch=={_base(npu_v)}, so that both match"))
    else:
        rows.append(_probe_npu_runtime(ctx, npu_v))
    return rows


def _probe_npu_runtime(ctx: Context, npu_v: str) -> Check:
    """Import torch_npu in a child process: a broken CANN can crash the importer."""
    code = ("import torch, torch_npu; print('npu', torch.npu.is_available(), "
            "torch.npu.device_count())")
    rc, out = _run([ctx.python, "-c", code], timeout=120, env=ctx.environ)
    match = re.search(r"npu (True|False) (\d+)", out)
    if rc != 0 or not match:
        last = out.splitlines()[-1] if out else f"exit code {rc}"
        return Check("torch_npu", FAIL, f"{npu_v}; import failed: {last}",
                     "import torch_npu works", "source the CANN set_env.sh first, then check "
                     "that torch_npu matches the CANN version")
    available, count = match.group(1) == "True", int(match.group(2))
    if not available:
        return Check("torch_npu", FAIL, f"{npu_v}; torch.npu.is_available() is False",
                     "NPUs visible to torch", "check the driver (npu-smi info) and "
                     "ASCEND_RT_VISIBLE_DEVICES")
    return Check("torch_npu", OK, f"{npu_v}; {count} NPU(s) visible", EXPECTED_TORCH)


# --- Ascend ---------------------------------------------------------------------------------

def _read_cann_version(home: Path) -> str | None:
    candidates = [home / "version.cfg", home / "latest" / "version.cfg",
                  *sorted(home.glob("*/ascend_toolkit_install.info")),
                  *sorted(home.glob("latest/*/ascend_toolkit_install.info"))]
    for path in candidates:
        if not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        match = re.search(r"(?:^|\n)\s*(?:version|Version)\s*=\s*([^\s\]]+)", text) or \
            re.search(r"toolkit_installed_version=\[([^:\]]+)", text)
        if match:
            return match.group(1).strip()
    return None


def check_cann(ctx: Context) -> list[Check]:
    found = [(label, ctx.ascend_root / rel) for label, rel in CANN_PATHS
             if (ctx.ascend_root / rel).is_file()]
    if not found:
        paths = " or ".join(str(ctx.ascend_root / rel) for _, rel in CANN_PATHS)
        return [Check("CANN", _missing_npu_status(ctx), f"no set_env.sh at {paths}",
                      "CANN 8.5.0 at /usr/local/Ascend/cann",
                      "install CANN 8.5.0 and the matching HDK 25.5.0 (only needed for "
                      "MindSpeed-MM; the diffusers backend runs without it)")]
    label, script = found[0]
    home = script.parent
    version = _read_cann_version(home) or "unknown"
    rows = []
    status = OK if label.startswith("8.5") else WARN
    fix = "" if status == OK else "MindSpeed-MM 2.3.0 expects CANN 8.5.0 at " \
        f"{ctx.ascend_root / 'cann'}"
    rows.append(Check("CANN", status, f"{script} (version {version})", "CANN 8.5.0", fix))
    rows.append(_check_cann_sourced(ctx, script))
    return rows


def _check_cann_sourced(ctx: Context, script: Path) -> Check:
    home = ctx.environ.get("ASCEND_TOOLKIT_HOME")
    ld_path = ctx.environ.get("LD_LIBRARY_PATH", "")
    if not home:
        return Check("CANN sourced", FAIL, "ASCEND_TOOLKIT_HOME is not set",
                     "set_env.sh sourced in this shell", f"source {script}")
    if not any(part.startswith(home.rstrip("/")) for part in ld_path.split(":") if part):
        return Check("CANN sourced", WARN, f"ASCEND_TOOLKIT_HOME={home}, but LD_LIBRARY_PATH "
                     "has none of its libraries", "LD_LIBRARY_PATH includes the CANN lib64",
                     f"source {script}")
    return Check("CANN sourced", OK, f"ASCEND_TOOLKIT_HOME={home}", "sourced")


_NPU_ROW = re.compile(r"^\|\s*(\d+)\s+([A-Za-z0-9][\w.-]*)\s*\|\s*([A-Za-z]+)\s*\|", re.M)


def parse_npu_smi(text: str) -> list[tuple[int, str, str]]:
    """(npu id, name, health) for each NPU in ``npu-smi info`` output."""
    return [(int(m.group(1)), m.group(2), m.group(3)) for m in _NPU_ROW.finditer(text)]


def check_npu_smi(ctx: Context) -> list[Check]:
    exe = shutil.which("npu-smi", path=ctx.environ.get("PATH"))
    if exe is None:
        return [Check("npu-smi", _missing_npu_status(ctx), "not on PATH",
                      "npu-smi lists the NPUs", "install the Ascend driver (HDK 25.5.0) and "
                      "add /usr/local/Ascend/driver/tools to PATH")]
    rc, out = _run([exe, "info"], env=ctx.environ)
    if rc != 0:
        return [Check("npu-smi", FAIL, f"exit code {rc}: {out[-200:]}", "npu-smi info works",
                      "check the driver install and that this user may access /dev/davinci*")]
    npus = parse_npu_smi(out)
    if not npus:
        return [Check("NPU devices", FAIL, "npu-smi lists no NPU", "at least 1 NPU",
                      "check the driver and the container's device mounts")]
    unhealthy = [f"{i} ({h})" for i, _, h in npus if h.upper() != "OK"]
    names = sorted({n for _, n, _ in npus})
    found = f"{len(npus)} x {', '.join(names)}"
    if unhealthy:
        return [Check("NPU devices", WARN, f"{found}; not OK: {', '.join(unhealthy)}",
                      "every NPU OK", "npu-smi info -t health -i <id> shows the fault")]
    return [Check("NPU devices", OK, found, "at least 1 NPU")]


def check_cuda(ctx: Context) -> list[Check]:
    """CUDA devices, counted in a child process so this one never imports torch."""
    if _version("torch") is None:
        return [Check("CUDA devices", SKIPPED, "torch not installed", "", "")]
    code = "import torch; print('cuda', torch.cuda.is_available(), torch.cuda.device_count())"
    rc, out = _run([ctx.python, "-c", code], timeout=120, env=ctx.environ)
    match = re.search(r"cuda (True|False) (\d+)", out)
    if rc != 0 or not match:
        return [Check("CUDA devices", WARN, f"could not ask torch (exit {rc})", "",
                      "python -c 'import torch' shows the error")]
    count = int(match.group(2))
    if count == 0:
        return [Check("CUDA devices", SKIPPED, "none", "an alternative to NPUs",
                      "the diffusers backend then runs on the CPU (slow, fine for tests)")]
    return [Check("CUDA devices", OK, f"{count} GPU(s)", "an alternative to NPUs")]


# --- MindSpeed-MM, Megatron, MindSpeed ------------------------------------------------------

def _git_head(repo: Path) -> tuple[str | None, str | None]:
    """(branch, commit) of a checkout, read from .git without needing the git binary."""
    git = repo / ".git"
    if git.is_file():  # a worktree or submodule: "gitdir: <path>"
        target = git.read_text(encoding="utf-8").partition("gitdir:")[2].strip()
        git = (repo / target).resolve() if target else git
    head_file = git / "HEAD"
    if not head_file.is_file():
        return None, None
    head = head_file.read_text(encoding="utf-8").strip()
    if not head.startswith("ref:"):
        return None, head
    ref = head.partition("ref:")[2].strip()
    branch = ref.rpartition("refs/heads/")[2] or ref
    ref_file = git / ref
    if ref_file.is_file():
        return branch, ref_file.read_text(encoding="utf-8").strip()
    packed = git / "packed-refs"
    if packed.is_file():
        for line in packed.read_text(encoding="utf-8").splitlines():
            sha, _, name = line.partition(" ")
            if name.strip() == ref:
                return branch, sha
    return branch, None


def check_mindspeed_mm(ctx: Context) -> list[Check]:
    root = ctx.mindspeed_mm
    if root is None:
        return [Check("MindSpeed-MM checkout", _missing_npu_status(ctx), "not given",
                      "a MindSpeed-MM 2.3.0 checkout",
                      "git clone -b 2.3.0 https://gitee.com/ascend/MindSpeed-MM.git, then "
                      "pass --mindspeed-mm DIR (train records it in cogvx.toml)")]
    if not root.is_dir():
        return [Check("MindSpeed-MM checkout", FAIL, f"{root} is not a folder",
                      "a MindSpeed-MM 2.3.0 checkout", "pass the folder holding pretrain_sora.py")]
    missing = [s for s in ENTRY_SCRIPTS if not (root / s).is_file()]
    branch, commit = _git_head(root)
    where = f"{root} (branch {branch or '?'}, commit {(commit or '?')[:12]})"
    rows = []
    if missing:
        rows.append(Check("MindSpeed-MM checkout", FAIL, f"{where}; missing {', '.join(missing)}",
                          "pretrain_sora.py, inference_sora.py, mindspeed_mm/tools/tools.json",
                          "point --mindspeed-mm at the repository root"))
    else:
        status = OK if branch == "2.3.0" else WARN
        fix = "" if status == OK else f"git -C {root} checkout 2.3.0" if branch else \
            "use a git checkout of branch 2.3.0, so its version can be checked"
        rows.append(Check("MindSpeed-MM checkout", status, where, "branch 2.3.0", fix))
    rows.append(_check_megatron(root))
    return rows


def _check_megatron(root: Path) -> Check:
    info = root / "megatron" / "core" / "package_info.py"
    if not (root / "megatron").is_dir():
        return Check("Megatron copy", FAIL, f"no megatron/ in {root}", EXPECTED_MEGATRON,
                     "git clone https://github.com/NVIDIA/Megatron-LM.git; git -C Megatron-LM "
                     f"checkout core_v0.12.1; cp -r Megatron-LM/megatron {root}/")
    if not info.is_file():
        return Check("Megatron copy", WARN, f"{root / 'megatron'} has no core/package_info.py",
                     EXPECTED_MEGATRON, "copy megatron/ from Megatron-LM core_v0.12.1")
    text = info.read_text(encoding="utf-8")
    parts = [re.search(rf"^{k}\s*=\s*(\d+)", text, re.M) for k in ("MAJOR", "MINOR", "PATCH")]
    version = ".".join(m.group(1) for m in parts if m) if all(parts) else "unknown"
    if version != EXPECTED_MEGATRON:
        return Check("Megatron copy", FAIL, f"megatron core {version}", EXPECTED_MEGATRON,
                     "replace megatron/ with the copy from Megatron-LM core_v0.12.1")
    return Check("Megatron copy", OK, f"megatron core {version}", EXPECTED_MEGATRON)


def check_mindspeed(ctx: Context) -> list[Check]:
    spec = importlib.util.find_spec("mindspeed")
    if spec is None or not spec.submodule_search_locations:
        return [Check("MindSpeed", _missing_npu_status(ctx), "not importable",
                      f"MindSpeed at commit {EXPECTED_MINDSPEED_COMMIT[:8]}",
                      "git clone https://gitee.com/ascend/MindSpeed.git; git checkout "
                      f"{EXPECTED_MINDSPEED_COMMIT[:8]}; pip install -e MindSpeed")]
    package = Path(list(spec.submodule_search_locations)[0])
    _, commit = _git_head(package.parent)
    if commit is None:
        return [Check("MindSpeed", WARN, f"{package} (commit unknown: not a git checkout)",
                      f"commit {EXPECTED_MINDSPEED_COMMIT[:8]}",
                      "install MindSpeed from a git checkout with pip install -e")]
    if commit != EXPECTED_MINDSPEED_COMMIT:
        return [Check("MindSpeed", WARN, f"commit {commit[:12]}",
                      f"commit {EXPECTED_MINDSPEED_COMMIT[:12]}",
                      f"git -C {package.parent} checkout {EXPECTED_MINDSPEED_COMMIT[:8]}")]
    return [Check("MindSpeed", OK, f"commit {commit[:12]}", f"{EXPECTED_MINDSPEED_COMMIT[:12]}")]


# --- Python packages and tools -------------------------------------------------------------

def check_video_readers(ctx: Context) -> list[Check]:
    decord, av = _version("decord"), _version("av")
    if decord:
        found = f"decord {decord}" + (f", PyAV {av}" if av else "")
        return [Check("video reader", OK, found, "decord 0.6.0 (PyAV as fallback)")]
    if av:
        status = WARN if ctx.backend != "mindspeed" else FAIL
        return [Check("video reader", status, f"PyAV {av}; decord missing",
                      "decord 0.6.0 (MindSpeed-MM reads videos with it)",
                      "pip install decord==0.6.0 on x86_64; build it from source on aarch64. "
                      "cogvx prepare-data works with PyAV alone")]
    return [Check("video reader", FAIL, "neither decord nor PyAV", "decord 0.6.0 or PyAV",
                  "pip install av (and decord==0.6.0 on x86_64)")]


def check_packages(ctx: Context) -> list[Check]:
    rows = []
    sp = _version("sentencepiece")
    rows.append(Check("sentencepiece", OK if sp else FAIL, sp or "not installed",
                      "installed (T5Tokenizer needs it)",
                      "" if sp else "pip install sentencepiece"))
    for name, pin in PINNED.items():
        found = _version(name)
        if found is None:
            rows.append(Check(name, WARN, "not installed", f"{pin} (MindSpeed-MM 2.3.0 pin)",
                              f"pip install {name}=={pin} (or pip install 'cogvx[diffusers]' "
                              "for the diffusers backend)"))
        elif _base(found) != pin:
            status = FAIL if ctx.wants_npu else WARN
            rows.append(Check(name, status, found, f"{pin} (MindSpeed-MM 2.3.0 pin)",
                              f"pip install {name}=={pin} in the MindSpeed-MM environment; "
                              "newer versions are fine for the diffusers backend"))
        else:
            rows.append(Check(name, OK, found, pin))
    return rows


def check_ffmpeg(ctx: Context) -> list[Check]:
    exe = shutil.which("ffmpeg", path=ctx.environ.get("PATH"))
    if exe is None:
        return [Check("ffmpeg", WARN, "not on PATH", "an ffmpeg binary",
                      "apt-get install ffmpeg (imageio-ffmpeg in MindSpeed-MM and video tools "
                      "use it; cogvx itself encodes with PyAV)")]
    return [Check("ffmpeg", OK, exe, "an ffmpeg binary")]


def check_hf_endpoint(ctx: Context) -> list[Check]:
    endpoint = ctx.environ.get("HF_ENDPOINT")
    xet = _version("hf_xet") or _version("hf-xet")
    disabled = ctx.environ.get("HF_HUB_DISABLE_XET", "").lower() in ("1", "true", "yes", "on")
    if not endpoint:
        return [Check("HF endpoint", OK, "huggingface.co (HF_ENDPOINT unset)", "")]
    if xet and not disabled:
        return [Check("HF endpoint", WARN, f"HF_ENDPOINT={endpoint} with hf_xet {xet}",
                      "Xet off when a mirror is used",
                      "export HF_HUB_DISABLE_XET=1 (Xet transfers bypass the mirror; "
                      "cogvx download sets it for its own downloads)")]
    return [Check("HF endpoint", OK, f"HF_ENDPOINT={endpoint}", "a reachable mirror")]


def check_online(ctx: Context) -> list[Check]:
    """Only with --online: does the hub endpoint answer?"""
    import urllib.error
    import urllib.request

    endpoint = ctx.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    url = f"{endpoint}/api/models/THUDM/CogVideoX-5b"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 (http/https)
            return [Check("hub reachable", OK, f"{endpoint} answered {response.status}",
                          "HTTP 200")]
    except urllib.error.HTTPError as exc:
        return [Check("hub reachable", WARN, f"{endpoint} answered {exc.code}", "HTTP 200",
                      "check HF_ENDPOINT and your token")]
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return [Check("hub reachable", FAIL, f"{endpoint}: {exc}", "HTTP 200",
                      "set HF_ENDPOINT to a reachable mirror (e.g. https://hf-mirror.com)")]


def check_disk(ctx: Context) -> list[Check]:
    root = ctx.workspace_root
    while not root.exists() and root != root.parent:
        root = root.parent
    free = shutil.disk_usage(root).free
    found = f"{free / GIB:.1f} GiB free at {root}"
    expected = "100 GiB for weights, converted checkpoints and runs"
    if free < 5 * GIB:
        return [Check("free disk", FAIL, found, expected, "free space or use --workspace")]
    if free < 100 * GIB:
        return [Check("free disk", WARN, found, expected,
                      "enough for small runs; the 5B weights and checkpoints need ~100 GiB")]
    return [Check("free disk", OK, found, expected)]


# --- environment variables (section 10 of the reference) ----------------------------------

def _int_range(low: int, high: int) -> Callable[[str], str | None]:
    def rule(value: str) -> str | None:
        # ASCII digits only, no spaces: the Ascend runtime parses these with atoi-like code
        if not re.fullmatch(r"[0-9]+", value):
            return f"an integer from {low} to {high}"
        return None if low <= int(value) <= high else f"an integer from {low} to {high}"
    rule.expected = f"{low}..{high}"  # type: ignore[attr-defined]
    return rule


def _choice(*allowed: str, fold: bool = False) -> Callable[[str], str | None]:
    def rule(value: str) -> str | None:
        probe = value.strip().lower() if fold else value.strip()
        options = [a.lower() for a in allowed] if fold else list(allowed)
        return None if probe in options else "one of " + ", ".join(allowed)
    rule.expected = " / ".join(allowed)  # type: ignore[attr-defined]
    return rule


_ALLOC_KEYS = {
    "expandable_segments": lambda v: v in ("True", "False"),
    "max_split_size_mb": lambda v: v.isdigit() and int(v) > 20,
    "garbage_collection_threshold": lambda v: re.fullmatch(r"0?\.\d+", v) is not None
    and 0 < float(v) < 1,
    "roundup_power2_divisions": lambda v: v.isdigit(),
}


def _alloc_conf(value: str) -> str | None:
    """PYTORCH_NPU_ALLOC_CONF: comma-separated key:value pairs with known keys."""
    expected = "key:value pairs such as expandable_segments:True"
    for item in value.split(","):
        key, sep, val = item.strip().partition(":")
        if not sep or not key or not val:
            return f"{expected} ({item.strip()!r} has no key:value form)"
        if key not in _ALLOC_KEYS:
            return f"{expected}; known keys: {', '.join(_ALLOC_KEYS)} (not {key!r})"
        if not _ALLOC_KEYS[key](val):
            return f"{expected} ({key}:{val} is not a valid value)"
    return None


_alloc_conf.expected = "e.g. expandable_segments:True"  # type: ignore[attr-defined]

ENV_RULES: dict[str, Callable[[str], str | None]] = {
    "ASCEND_SLOG_PRINT_TO_STDOUT": _choice("0", "1"),
    "ASCEND_GLOBAL_LOG_LEVEL": _int_range(0, 4),
    "TASK_QUEUE_ENABLE": _choice("0", "1", "2"),
    "COMBINED_ENABLE": _choice("0", "1"),
    "CPU_AFFINITY_CONF": _choice("0", "1", "2"),
    "HCCL_CONNECT_TIMEOUT": _int_range(120, 7200),
    "PYTORCH_NPU_ALLOC_CONF": _alloc_conf,
    "HCCL_EXEC_TIMEOUT": _int_range(68, 17340),
    "ACLNN_CACHE_LIMIT": _int_range(1, 10_000_000),
    "TOKENIZERS_PARALLELISM": _choice("False", "True", fold=True),
    "MULTI_STREAM_MEMORY_REUSE": _choice("0", "1"),
    "NPU_ASD_ENABLE": _int_range(0, 3),
    "ASCEND_LAUNCH_BLOCKING": _choice("0", "1"),
    "NPUS_PER_NODE": _int_range(1, 1024),
}


def validate_env_value(name: str, value: str) -> str | None:
    """What ``name`` should be when ``value`` is not allowed; None when it is fine."""
    rule = ENV_RULES.get(name)
    return None if rule is None else rule(value)


def check_env_vars(ctx: Context) -> list[Check]:
    rows, unset = [], []
    for name, rule in ENV_RULES.items():
        value = ctx.environ.get(name)
        if value is None:
            unset.append(name)
            continue
        expected = getattr(rule, "expected", "")
        problem = rule(value)
        if problem:
            rows.append(Check(f"${name}", FAIL, repr(value), expected,
                              f"export {name} to {problem}, or unset it"))
        else:
            rows.append(Check(f"${name}", OK, value, expected))
    rows.append(_check_max_connections(ctx))
    if unset:
        rows.append(Check("other documented variables", OK, "unset: " + ", ".join(unset),
                          "defaults apply", "cogvx train sets the training scripts' values"))
    return rows


def _check_max_connections(ctx: Context) -> Check:
    name = "CUDA_DEVICE_MAX_CONNECTIONS"
    value = ctx.environ.get(name)
    parallel = ctx.tp > 1 or ctx.cp > 1
    if value == "1":
        return Check(f"${name}", OK, value, "1")
    if value is None:
        status = WARN if parallel else OK
        return Check(f"${name}", status, "unset", "1 for tensor- or context-parallel runs",
                     "cogvx train and lora export it; export it yourself for hand-made launches")
    status = FAIL if parallel else WARN
    return Check(f"${name}", status, repr(value), "1 (Megatron refuses TP>1 otherwise)",
                 f"export {name}=1")


# --- recorded model assets ------------------------------------------------------------------

def _asset_problem(kind: str, path: Path) -> str | None:
    """What is missing from a recorded asset, or None when it looks complete."""
    if not path.exists():
        return f"{path} does not exist"
    if kind == "vae":
        if path.is_file() or (path / "3d-vae.pt").is_file() or (path / "config.json").is_file():
            return None
        return f"{path} holds neither 3d-vae.pt nor a diffusers VAE"
    needs = {
        "t5": [("config.json",), ("model.safetensors.index.json", "model.safetensors")],
        "tokenizer": [("spiece.model", "tokenizer.json"), ("tokenizer_config.json",)],
        "checkpoint": [("latest_checkpointed_iteration.txt",)],
    }[kind]
    for options in needs:
        if not any((path / name).exists() for name in options):
            return f"{path} has no {' or '.join(options)}"
    return None


def check_assets(ctx: Context) -> list[Check]:
    labels = {"t5": "T5 text encoder", "tokenizer": "tokenizer", "vae": "VAE",
              "checkpoint": "MM checkpoint"}
    rows = []
    for kind, label in labels.items():
        path = ctx.recorded.get(kind)
        if path is None:
            fix = "cogvx convert sat-to-mm" if kind == "checkpoint" else "cogvx download t2v-1.5"
            rows.append(Check(label, SKIPPED, "not recorded in cogvx.toml", "", f"run {fix}"))
            continue
        problem = _asset_problem(kind, path)
        rows.append(Check(label, FAIL, problem, "a complete folder", "run cogvx download "
                          "--verify-only, or fix the path in cogvx.toml") if problem else
                    Check(label, OK, str(path), "present"))
    return rows


PROBES: list[Callable[[Context], list[Check]]] = [
    check_python, check_torch, check_cann, check_npu_smi, check_cuda, check_mindspeed_mm,
    check_mindspeed, check_video_readers, check_packages, check_ffmpeg, check_hf_endpoint,
    check_disk, check_env_vars, check_assets,
]


def resolve_backend(ctx: Context) -> str:
    """``auto`` means MindSpeed-MM on a host with signs of Ascend, else diffusers."""
    if ctx.backend != "auto":
        return ctx.backend
    ascend = _version("torch_npu") is not None or any(
        (ctx.ascend_root / rel).is_file() for _, rel in CANN_PATHS)
    return "mindspeed" if ascend else "diffusers"


def run_checks(ctx: Context) -> list[Check]:
    """Every probe in order; a probe that breaks becomes a failed row, never a crash."""
    ctx.backend = resolve_backend(ctx)
    rows: list[Check] = []
    probes = PROBES + ([check_online] if ctx.online else [])
    for probe in probes:
        try:
            rows.extend(probe(ctx))
        except Exception as exc:  # a probe bug must not hide the other rows
            name = probe.__name__.removeprefix("check_")
            rows.append(Check(name, FAIL, f"probe failed: {type(exc).__name__}: {exc}", "",
                              "rerun with --debug and report it"))
    return rows


def summarize(rows: list[Check]) -> dict:
    """Counts per status and the JSON-ready rows."""
    counts = {s: sum(r.status == s for r in rows) for s in (OK, WARN, FAIL, SKIPPED)}
    return {"ok": counts[FAIL] == 0, "counts": counts, "checks": [asdict(r) for r in rows]}
