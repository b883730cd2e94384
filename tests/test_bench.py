"""bench/run.py --smoke: every section of the benchmark comes out with figures.

Only that figures are produced is checked, never the goals: a benchmark on a shared 2-core machine is not a timed
test. The run starts nginx (or the demo limiter), locust, wrk, the httpx generator and redis-server on 127.0.0.1.
"""

import re
import shutil
import subprocess
import sys

import pytest

from tests.support import INSTALL_DEV, INSTALL_REDIS, INSTALL_WRK, ROOT, need_command, need_module, require_all

pytestmark = pytest.mark.integration


def section(text: str, number: str) -> str:
    m = re.search(rf"^## {re.escape(number)}\..*?(?=^## |\Z)", text, re.M | re.S)
    assert m, f"no section {number}:\n{text}"
    return m.group(0)


def figure(text: str, label: str, column: int = 1) -> float:
    """The number in ``column`` of the table row whose first cell starts with ``label``."""
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0].startswith(label):
            m = re.match(r"[\d,.]+", cells[column])
            assert m, line
            return float(m.group(0).replace(",", ""))
    raise AssertionError(f"no row {label!r} in:\n{text}")


def test_smoke_run_writes_every_section_with_figures(tmp_path):
    need_command("wrk", INSTALL_WRK)
    need_module("httpx", INSTALL_DEV)
    # without redis-server the bench leaves its redis figures out and the rest is still checked; CI must have them
    with_redis = shutil.which("redis-server") is not None
    if require_all():
        need_command("redis-server", INSTALL_REDIS)
    out = tmp_path / "RESULTS.md"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--smoke", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    text = out.read_text()
    for heading in ("## Machine", "## Goals"):
        assert heading in text
    assert re.search(r"\| nproc \| \d+ \|", text)
    assert re.search(r"\| locust \| \d+\.\d+", text)
    assert "python bench/run.py --smoke" in text  # the command to reproduce

    throughput = section(text, "1")
    for row in (
        "suite user + listener (suite's count)",
        "suite user, listener removed",
        "plain FastHttpUser",
        "wrk -t1",
        "asyncio + httpx, 100",
    ):
        assert figure(throughput, row) > 0, row
    assert re.search(r"suite \+ listener / plain FastHttpUser: \*\*\d+\.\d+x\*\*", throughput)

    assert figure(section(text, "2"), "A/B per pair") > 0

    accuracy = section(text, "3")
    for level in ("25%", "50%", "90%"):
        assert figure(accuracy, level, column=2) > 0, level  # the suite's printed Stage rates, lowest

    workers = section(text, "4")
    assert figure(workers, "1 worker(s)") > 0
    assert figure(workers, "2 worker(s)") > 0

    limiter = section(text, "5")
    assert figure(limiter, "memory: 3 nodes, 1 process") > 0
    if with_redis:
        assert figure(limiter, "redis: 1 node process") > 0
