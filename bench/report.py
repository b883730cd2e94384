"""The reports' building blocks: Markdown tables, number formats, the commit measured and the machine it ran on."""

from __future__ import annotations

import platform
import re
import shutil
import subprocess
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "| " + " | ".join("---" for _ in header) + " |",
        *("| " + " | ".join(row) + " |" for row in rows),
    ]


def rps(v: float) -> str:
    return f"{v:,.0f}"


def ratio(v: float) -> str:
    return f"{v:.3f}"


def verdict(ok: bool) -> str:
    return "met" if ok else "**not met**"


def commit(root: Path = ROOT) -> str:
    """The checkout's short commit, and how many files differ from it (the figures are of the working tree)."""
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=root)
    dirty = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True, cwd=root)
    changed = len([ln for ln in dirty.stdout.splitlines() if ln.strip()])
    return (git.stdout.strip() or "?") + (f" + {changed} uncommitted change(s)" if changed else "")


def machine() -> dict[str, str]:
    """What the figures depend on: CPU, memory, kernel, and the versions of Python, Locust and the other programs."""
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    models = re.findall(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
    mhz = re.findall(r"^cpu MHz\s*:\s*(.+)$", cpuinfo, re.M)
    mem = re.search(r"^MemTotal:\s*(\d+) kB", Path("/proc/meminfo").read_text(), re.M)
    nproc = subprocess.run(["nproc"], capture_output=True, text=True, check=False).stdout.strip()

    def version(cmd: list[str], pattern: str) -> str:
        if not shutil.which(cmd[0]):
            return "not installed"
        p = subprocess.run(cmd, capture_output=True, text=True, check=False)
        m = re.search(pattern, p.stdout + p.stderr)
        return m.group(1) if m else "?"

    def dist(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "not installed"

    return {
        "CPU": f"{models[0] if models else '?'} ({len(models)} logical CPUs in /proc/cpuinfo"
        + (f", {float(mhz[0]):.0f} MHz" if mhz else "")
        + ")",
        "nproc": nproc,
        "Memory": f"{int(mem.group(1)) / 1024 / 1024:.1f} GiB" if mem else "?",
        "Kernel": platform.release(),
        "Python": platform.python_version(),
        "locust": dist("locust"),
        "gevent / geventhttpclient": f"{dist('gevent')} / {dist('geventhttpclient')}",
        "httpx / httpcore": f"{dist('httpx')} / {dist('httpcore')}",
        "wrk": version(["wrk", "-v"], r"wrk (\S+)"),
        "nginx": version(["nginx", "-v"], r"nginx/(\S+)"),
        "redis-server": version(["redis-server", "--version"], r"v=(\S+)"),
    }
