"""The bench's processes, on psutil: stopped by PID (never by name), their CPU time, pinning to a core, ports."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from contextlib import suppress
from typing import Any

import psutil

from bench import BenchError


def cpus() -> tuple[list[str], list[str]]:
    """taskset prefixes (server, load generator): separate cores when there are two."""
    if shutil.which("taskset") and len(os.sched_getaffinity(0)) >= 2:
        a, b = sorted(os.sched_getaffinity(0))[:2]
        return ["taskset", "-c", str(b)], ["taskset", "-c", str(a)]
    return [], []


def children(pid: int) -> list[int]:
    """Direct children of ``pid``, so that a forked worker is stopped by its own PID too."""
    with suppress(psutil.Error):
        return [child.pid for child in psutil.Process(pid).children()]
    return []


def descendants(pid: int) -> list[int]:
    with suppress(psutil.Error):
        return [child.pid for child in psutil.Process(pid).children(recursive=True)]
    return []


def cpu_seconds(pid: int) -> float:
    """User + system CPU-seconds of ``pid`` itself (not its children); 0 once it is gone."""
    with suppress(psutil.Error):
        times = psutil.Process(pid).cpu_times()
        return times.user + times.system
    return 0.0


def rss_mb(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / 2**20


def stop(proc: subprocess.Popen[Any]) -> None:
    """SIGTERM, then SIGKILL if it has not ended within 10 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def stop_tree(proc: subprocess.Popen[Any]) -> None:
    """Stop the process, then SIGKILL any of its children still alive; by PID only."""
    kids = children(proc.pid)
    stop(proc)
    for pid in kids:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def stop_group(proc: subprocess.Popen[Any]) -> None:
    """Stop the process, then whatever is left of the process group it leads (started with start_new_session)."""
    stop_tree(proc)
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def wait_for_ports(ports: list[int], proc: subprocess.Popen[Any], timeout: float = 10) -> None:
    """Until ``proc`` accepts connections on every port of 127.0.0.1; BenchError if it exits or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    for port in ports:
        while True:
            with suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"target did not listen on 127.0.0.1:{port}")
            time.sleep(0.05)
