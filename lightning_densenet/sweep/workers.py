"""`sweep --workers K`: K worker processes on one study, on this machine.

Worker i runs `python -m lightning_densenet sweep <the same arguments> --worker_index i`, the
command a worker started by hand runs. With CUDA GPUs, worker i sees one GPU (i modulo their
number) through CUDA_VISIBLE_DEVICES; on CPU the workers share the cores through
OMP_NUM_THREADS (cores / K each), unless it is set already. The workers run in their own
session, so the parent forwards Ctrl+C and SIGTERM to each of them once.

Every worker starts a trial only while the study holds fewer than n_trials finished ones, and
finishes a trial it started, so the study can end with up to K - 1 trials more than n_trials
(at most one per worker past it).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from types import FrameType

import torch


def without_workers(argv: list[str]) -> list[str]:
    """`argv` without `--workers K` / `--workers=K` and `--worker_index I` (or `--worker-index`):
    each worker's own arguments, to which its `--worker_index` is added."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in ("--workers", "--worker_index", "--worker-index"):
            skip = True
        elif not arg.startswith(("--workers=", "--worker_index=", "--worker-index=")):
            out.append(arg)
    return out


def start_and_wait(argv: list[str], workers: int) -> list[int]:
    """Starts the workers, waits for all of them, and returns their exit codes (128 + N for a
    worker ended by signal N); says which failed."""
    gpus = _gpus()
    processes: list[subprocess.Popen[bytes]] = []

    def forward(signum: int, _: FrameType | None) -> None:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        for i in range(workers):
            command = [sys.executable, "-m", "lightning_densenet", "sweep", *argv]
            processes.append(
                subprocess.Popen(
                    [*command, "--worker_index", str(i)],
                    env=_environment(i, workers, gpus),
                    start_new_session=True,  # a terminal's Ctrl+C reaches them through forward()
                )
            )
            where = f" on GPU {gpus[i % len(gpus)]}" if gpus else ""
            print(f"Worker {i} of {workers}: pid {processes[-1].pid}{where}", flush=True)
        while any(process.poll() is None for process in processes):  # poll() reaps the dead
            time.sleep(0.2)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    codes = []
    for i, process in enumerate(processes):
        code = process.returncode
        if code < 0:
            print(f"Worker {i} (pid {process.pid}) was killed by {signal.Signals(-code).name}")
            code = 128 - code
        elif code:
            print(f"Worker {i} (pid {process.pid}) exited with code {code}")
        codes.append(code)
    return codes


def _gpus() -> list[str]:
    """The CUDA devices this process may use, as CUDA_VISIBLE_DEVICES names them."""
    if not torch.cuda.is_available():
        return []
    count = torch.cuda.device_count()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible:
        return [d.strip() for d in visible.split(",") if d.strip()][:count]
    return [str(i) for i in range(count)]


def _environment(i: int, workers: int, gpus: list[str]) -> dict[str, str]:
    env = dict(os.environ)
    if gpus:
        env["CUDA_VISIBLE_DEVICES"] = gpus[i % len(gpus)]
    elif "OMP_NUM_THREADS" not in env:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // workers))
    return env


__all__ = ["start_and_wait", "without_workers"]
