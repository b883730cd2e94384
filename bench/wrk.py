"""wrk, the reference load generator: one process per node URL, all at once, totals summed."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass


@dataclass(frozen=True)
class Run:
    rps: float
    requests: int
    non2xx: int
    errors: int


def wrk(urls: list[str], connections: int, duration: float, pin: list[str]) -> Run:
    """One wrk per node URL, all at once; connections split between them; totals summed."""
    per = max(1, connections // len(urls))
    procs = [
        subprocess.Popen(
            [*pin, "wrk", "-t1", f"-c{per}", f"-d{max(1, round(duration))}s", url + "/"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        for url in urls
    ]
    rps = 0.0
    requests = non2xx = errors = 0
    for p in procs:
        out, _ = p.communicate(timeout=duration + 30)
        text = out.decode()
        m = re.search(r"Requests/sec:\s+([\d.]+)", text)
        if p.returncode != 0 or not m:
            raise SystemExit(f"bench: wrk failed:\n{text}")
        rps += float(m.group(1))
        requests += int(re.search(r"(\d+) requests in", text).group(1))  # type: ignore[union-attr]
        if n := re.search(r"Non-2xx or 3xx responses: (\d+)", text):
            non2xx += int(n.group(1))
        if e := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text):
            errors += sum(int(x) for x in e.groups())
    return Run(rps, requests, non2xx, errors)
