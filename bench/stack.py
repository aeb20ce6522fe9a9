"""How long `make up` takes: cold (empty state dir, packages already installed), warm (stopped stack,
data kept) and no-op (everything already running), side by side in one run.

    .venv/bin/python bench/stack.py [--runs N]

Uses a temporary MODELHUB_HOME so it never touches the developer's own stack.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEV = ROOT / ".venv" / "bin" / "modelhub-dev"


def timed(command: str, env: dict[str, str]) -> float:
    started = time.perf_counter()
    result = subprocess.run([str(DEV), command], cwd=ROOT, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        sys.stderr.write(result.stdout + result.stderr)
        raise SystemExit(f"modelhub-dev {command} failed")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="repetitions of each measurement")
    args = parser.parse_args()
    cold: list[float] = []
    warm: list[float] = []
    noop: list[float] = []
    for _ in range(args.runs):
        root = Path(tempfile.mkdtemp(prefix="modelhub-bench-"))
        root.chmod(0o711)  # PostgreSQL's system user must pass through it
        home = root / "home"
        env = {**os.environ, "MODELHUB_HOME": str(home)}
        try:
            cold.append(timed("up", env))
            noop.append(timed("up", env))
            timed("down", env)
            warm.append(timed("up", env))
        finally:
            subprocess.run([str(DEV), "clean"], cwd=ROOT, env=env, capture_output=True)
            shutil.rmtree(root, ignore_errors=True)

    def row(name: str, values: list[float], baseline: float) -> str:
        median = statistics.median(values)
        return f"| {name} | {median:6.2f} s | {min(values):6.2f} s | {max(values):6.2f} s | {median / baseline:5.2f}x |"

    base = statistics.median(cold)
    print(f"make up timings over {args.runs} runs (ratio: against cold start)")
    print("| start | median | min | max | vs cold |")
    print("|---|---|---|---|---|")
    print(row("cold (new data dir)", cold, base))
    print(row("warm (stopped, data kept)", warm, base))
    print(row("no-op (already running)", noop, base))


if __name__ == "__main__":
    main()
