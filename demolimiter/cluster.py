"""Supervise one ``node`` subprocess per cluster node (redis backend): the nodes share only redis."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import sys

from .config import Settings

READY_TIMEOUT = 30.0
STOP_TIMEOUT = 5.0
PARENT_ENV = "DEMOLIMITER_PARENT_PID"


def follow_parent() -> None:
    """In a child: die with the supervisor even if it is SIGKILLed (Linux PR_SET_PDEATHSIG), never orphaned."""
    parent = os.environ.pop(PARENT_ENV, None)
    if parent is None or not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    if os.getppid() != int(parent):  # the parent died before prctl took effect
        sys.exit(1)


async def _start(args: list[str]) -> asyncio.subprocess.Process:
    env = {**os.environ, PARENT_ENV: str(os.getpid())}
    # Own session: a terminal's Ctrl-C reaches only the supervisor, which then stops the nodes in order.
    return await asyncio.create_subprocess_exec(
        *args, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, env=env, start_new_session=True
    )


async def _ready(proc: asyncio.subprocess.Process) -> str | None:
    """The child's URL from its READY line, or None if it exited (or spoke nonsense) first."""
    line = await proc.stdout.readline()  # type: ignore[union-attr]
    if line.startswith(b"READY "):
        return line[6:].decode().strip()
    return None


async def _stop(procs: list[asyncio.subprocess.Process]) -> None:
    for p in procs:
        if p.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                p.terminate()
    for p in procs:
        try:
            await asyncio.wait_for(p.wait(), STOP_TIMEOUT)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                p.kill()
            await p.wait()


async def supervise(settings: Settings, ports: list[int], names: list[str | None]) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    procs: list[asyncio.subprocess.Process] = []
    try:
        for port, name in zip(ports, names, strict=True):
            args = [
                sys.executable,
                "-m",
                "demolimiter",
                "node",
                "--port",
                str(port),
                *settings.node_args(),
                "--port-option=--base-port",
            ]
            if name is not None:
                args += ["--node-name", name]
            procs.append(await _start(args))
        stopping = asyncio.ensure_future(stop.wait())
        readies = [asyncio.ensure_future(_ready(p)) for p in procs]
        starting = asyncio.ensure_future(asyncio.wait(readies, timeout=READY_TIMEOUT))
        await asyncio.wait([stopping, starting], return_when=asyncio.FIRST_COMPLETED)
        if stopping.done() or not all(r.done() for r in readies):
            for r in (starting, *readies):
                r.cancel()
            await asyncio.gather(starting, *readies, return_exceptions=True)
            if stopping.done():
                return 0
            print(f"demolimiter: nodes not ready within {READY_TIMEOUT:.0f}s; stopping", file=sys.stderr)
            return 1
        urls = [r.result() for r in readies]
        if None in urls:
            # A node failed to start; it already printed why (e.g. its port is taken), so pass its exit code on.
            failed = procs[urls.index(None)]
            code = await failed.wait()
            return code if code > 0 else 1
        print("READY " + ",".join(urls), flush=True)  # type: ignore[arg-type]
        exits = {asyncio.ensure_future(p.wait()): p for p in procs}
        done, _ = await asyncio.wait([stopping, *exits], return_when=asyncio.FIRST_COMPLETED)
        if stopping in done:
            return 0
        dead = next(exits[f] for f in done if f in exits)
        print(
            f"demolimiter: node pid {dead.pid} exited with code {dead.returncode}; stopping the cluster",
            file=sys.stderr,
            flush=True,
        )
        return 1
    finally:
        await _stop(procs)
