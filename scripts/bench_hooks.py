"""S1 (one writer, many readers) with and without a slow hook, side by side, through the
shared harness: relaying must not wait for hooks.

    python scripts/bench_hooks.py PATH/TO/shared/bench --reps 5

Runs the harness' S1 matrix for `collab` and for `collab-hook`, the same server with
`--hooks bench_hooks:SLOW` (an on_change and an on_settled hook that each take 1 s),
interleaved, then prints the harness' tables and the per-repetition ratio of the
updates/s delivered to every reader at the maximum rate. This file is also the module
that `--hooks bench_hooks:SLOW` loads (the script's folder is put on PYTHONPATH).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from collab.hooks import Change, Hooks, Settled

HOOK_SECONDS = 1.0


async def _slow_change(_changes: Sequence[Change]) -> None:
    await asyncio.sleep(HOOK_SECONDS)


async def _slow_settled(_event: Settled) -> None:
    await asyncio.sleep(HOOK_SECONDS)


SLOW = Hooks(on_change=_slow_change, on_settled=_slow_settled)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("harness", type=Path, help="the shared harness' folder (run.py)")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("/tmp/collab-bench-hooks.jsonl"))
    args = parser.parse_args()
    here = Path(__file__).resolve().parent
    serve = f"{sys.executable} -m collab serve --port {{port}} --db {{data}}/collab.db"
    extras = [
        f"collab={serve}|ws://127.0.0.1:{{port}}/|yws|persist",
        f"collab-hook=env PYTHONPATH={here} {serve} --hooks bench_hooks:SLOW"
        "|ws://127.0.0.1:{port}/|yws|persist",
    ]
    args.out.unlink(missing_ok=True)
    command = [sys.executable, "run.py", "suite", "--reps", str(args.reps), "--only", "s1"]
    command += ["--out", str(args.out.resolve()), "--peers", ""]
    for extra in extras:
        command += ["--extra", extra]
    subprocess.run(command, cwd=args.harness, check=True)
    subprocess.run(
        [sys.executable, "run.py", "report", str(args.out.resolve())], cwd=args.harness, check=True
    )
    _ratios([json.loads(line) for line in args.out.read_text().splitlines() if line.strip()])


def _ratios(runs: list[dict[str, Any]]) -> None:
    """Per repetition and reader count: collab-hook's full-fan-out rate over collab's."""
    rates: dict[tuple[str, str], list[float]] = defaultdict(list)
    for run in runs:
        if run.get("scenario") != "s1" or run.get("rate") != "max":
            continue
        readers = str(run.get("readers", "?"))
        rates[(run["label"], readers)].append(float(run.get("updates_per_s_full_fanout", 0)))
    for readers in sorted({readers for _, readers in rates}):
        plain, hooked = rates[("collab", readers)], rates[("collab-hook", readers)]
        ratios = [h / p for p, h in zip(plain, hooked, strict=False) if p]
        if ratios:
            print(
                f"S1 max rate, {readers} readers: collab-hook / collab = "
                f"{statistics.median(ratios):.3f} (per repetition: "
                + ", ".join(f"{r:.3f}" for r in ratios)
                + ")"
            )


if __name__ == "__main__":
    main()
