"""Where a running server's CPU goes, by event-loop callback: `collab` with a meter.

Runs the `collab` command line (all arguments go to it) with every callback of the
event loop timed in CPU time of the main thread (CLOCK_THREAD_CPUTIME_ID, which a
process waiting for a shared core does not accumulate, unlike a sampling profiler's
wall-clock samples), plus the time spent in epoll. Tasks are named by their coroutine.
LOOP_CPU_FUNCS, a comma-separated list of `module:Qualified.name`, times those
functions too (inclusive; nested ones count in both).

SIGUSR1 starts a window (clears the counters), SIGUSR2 writes the table to
LOOP_CPU_DIR/PID.txt (default: the temp dir); so does the exit. One thread-time read costs
about 1 us here, so a function called per frame reads a few us dearer than it is.

With the shared harness (an S7 spread run of a 2-node cluster; signal both nodes 9 s
after the start, and again 10 s later):

    python3 run.py once --label collab-cluster --persist --nodes 2 --redis \\
      --cluster-cmd "VENV/bin/python scripts/loop_cpu.py serve --host 127.0.0.1 \\
        --port {port} --db {data}/collab.db --redis {redis}" \\
      --url "ws://127.0.0.1:{port}/" --scenario s7 -- --mode spread --rooms 100 \\
      --clients 6 --rate 1 --duration 20 &
    sleep 12; pkill -USR1 -f loop_cpu.py; sleep 10; pkill -USR2 -f loop_cpu.py
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import importlib
import os
import selectors
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

_spent: Counter[str] = Counter()  # ns of main-thread CPU
_calls: Counter[str] = Counter()
_now = time.thread_time_ns


def _name(callback: Any) -> str:
    task = getattr(callback, "__self__", None)
    if isinstance(task, asyncio.Task):
        coro = task.get_coro()
        return "task " + getattr(coro, "__qualname__", repr(coro))
    inner = getattr(callback, "func", callback)  # functools.partial
    return getattr(inner, "__qualname__", repr(type(inner)))


def _metered(key: str | None, run: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(run)
    def metered(*args: Any, **kwargs: Any) -> Any:
        start = _now()
        try:
            return run(*args, **kwargs)
        finally:
            name = key if key is not None else _name(args[0]._callback)
            _spent[name] += _now() - start
            _calls[name] += 1

    return metered


def _meter_function(spec: str) -> None:
    module, _, path = spec.partition(":")
    owner: Any = importlib.import_module(module)
    *outer, last = path.split(".")
    for part in outer:
        owner = getattr(owner, part)
    setattr(owner, last, _metered("fn " + path, getattr(owner, last)))


def _write(*_: object) -> None:
    path = os.path.join(os.environ.get("LOOP_CPU_DIR", tempfile.gettempdir()), f"{os.getpid()}.txt")
    total = sum(spent for name, spent in _spent.items() if not name.startswith("fn "))
    lines = [
        f"main thread {total / 1e6:.1f} ms CPU in the window"
        f" (process: {time.process_time():.2f} s since start; fn rows: inside callbacks)"
    ]
    for name, spent in _spent.most_common():
        calls = _calls[name]
        per_call = spent / calls / 1e3
        lines.append(f"{spent / 1e6:10.1f} ms {calls:9d} calls {per_call:9.1f} us/call  {name}")
    with open(path, "w") as out:
        out.write("\n".join(lines) + "\n")


def _reset(*_: object) -> None:
    _spent.clear()
    _calls.clear()


def main() -> None:
    asyncio.events.Handle._run = _metered(None, asyncio.events.Handle._run)  # type: ignore[method-assign]
    selectors.EpollSelector.select = _metered("epoll", selectors.EpollSelector.select)  # type: ignore[method-assign]
    for spec in filter(None, os.environ.get("LOOP_CPU_FUNCS", "").split(",")):
        _meter_function(spec)
    signal.signal(signal.SIGUSR1, _reset)
    signal.signal(signal.SIGUSR2, _write)
    atexit.register(_write)
    from collab.cli import main as collab

    sys.argv[0] = "collab"
    collab()


if __name__ == "__main__":
    main()
