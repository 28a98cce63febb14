"""How long `cogvx --help` takes, as a ratio to `python -c "import typer"`, measured side by side.

Run: python bench/bench_help.py [--repeat N]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time


def _time(argv: list[str], repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    py = sys.executable
    cases = {
        "python -c 'import typer'": [py, "-c", "import typer"],
        "cogvx --help": [py, "-m", "cogvideo_cli", "--help"],
        "cogvx env-check --help": [py, "-m", "cogvideo_cli", "env-check", "--help"],
        "python -c 'import torch' (for scale)": [py, "-c", "import torch"],
    }
    # interleave warm-up so the file cache treats every case alike
    for argv in cases.values():
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    times = {name: _time(argv, args.repeat) for name, argv in cases.items()}
    base = times["python -c 'import typer'"]
    print(f"{'case':40s} {'median s':>9s} {'ratio to import typer':>22s}")
    for name, seconds in times.items():
        print(f"{name:40s} {seconds:9.3f} {seconds / base:22.2f}")


if __name__ == "__main__":
    main()
