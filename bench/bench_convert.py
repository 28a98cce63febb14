"""Benchmark ``cogvx convert sat-to-mm`` against the serializer floor and a plain copy.

Builds a full-structure 42-layer CogVideoX 1.5 SAT checkpoint at hidden size 1024 (bf16,
about 1.5 GB), then runs, each in its own process:

* ``cogvx convert sat-to-mm --tp 2 --pp-layers 10 11 11 10``;
* the serializer floor: ``torch.load(..., mmap=True)`` then one ``torch.save`` of the same
  tensors;
* ``cp`` of the source file.

Prints wall times, their ratios, and each process's peak anonymous resident memory (RssAnon
sampled from /proc, i.e. memory that is not file cache) as a fraction of the checkpoint.

Usage: python bench/bench_convert.py [--workdir DIR] [--hidden 1024] [--keep]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

FLOOR = """
import sys, torch
sd = torch.load(sys.argv[1], map_location="cpu", weights_only=True, mmap=True)
torch.save(sd["module"], sys.argv[2])
"""


def build_source(folder: Path, hidden: int) -> Path:
    """A SAT download of t2v-1.5 at ``hidden`` width, written tensor group by group."""
    import torch

    from cogvideo_cli.checkpoint.mapping import SAT_MAP, SAT_PREFIX, expected_shapes
    from cogvideo_cli.core.variants import get_variant

    variant = dataclasses.replace(get_variant("t2v-1.5"), num_heads=hidden // 64)
    gen = torch.Generator().manual_seed(0)
    module = {}
    for name, shape in expected_shapes(variant).items():
        module[SAT_PREFIX + SAT_MAP.from_mm(name)[0]] = \
            torch.randn(shape, generator=gen, dtype=torch.float32).to(torch.bfloat16)
    (folder / "1000").mkdir(parents=True)
    (folder / "latest").write_text("1000")
    path = folder / "1000" / "mp_rank_00_model_states.pt"
    torch.save({"module": module}, path)
    return path


def _rss_anon_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def measure(argv: list[str]) -> tuple[float, int]:
    """(wall seconds, peak RssAnon bytes) of a command, sampled every 5 ms."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0

    def sample() -> None:
        nonlocal peak
        while proc.poll() is None:
            peak = max(peak, _rss_anon_kb(proc.pid))
            time.sleep(0.005)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    _, err = proc.communicate()
    elapsed = time.perf_counter() - start
    thread.join()
    if proc.returncode:
        raise SystemExit(f"{argv[:4]} failed ({proc.returncode}): {err.decode()[-2000:]}")
    return elapsed, peak * 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--keep", action="store_true", help="keep the files afterwards")
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="cogvx-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        run(work, args.hidden)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def run(work: Path, hidden: int) -> None:
    source = build_source(work / "sat", hidden)
    size = source.stat().st_size
    python = sys.executable
    subprocess.run(["cat", str(source)], stdout=subprocess.DEVNULL, check=True)  # warm cache
    rows = {
        "cogvx convert": measure([python, "-m", "cogvideo_cli", "-q", "convert", "sat-to-mm",
                                  "--source", str(source), "--target", str(work / "mm"),
                                  "--tp", "2", "--pp-layers", "10", "11", "11", "10"]),
        "serializer floor": measure([python, "-c", FLOOR, str(source), str(work / "floor.pt")]),
        "cp": measure(["cp", str(source), str(work / "copy.pt")]),
    }
    floor = rows["serializer floor"][0]
    print(f"checkpoint: 42 layers, hidden {hidden}, bf16, {size / 2**30:.2f} GiB "
          f"({os.cpu_count()} CPUs)")
    print(f"{'run':<18}{'seconds':>9}{'x floor':>9}{'peak anon':>11}{'x ckpt':>8}")
    for name, (seconds, peak) in rows.items():
        print(f"{name:<18}{seconds:>9.2f}{seconds / floor:>9.2f}"
              f"{peak / 2**20:>9.0f}MB{peak / size:>8.2f}")


if __name__ == "__main__":
    main()
