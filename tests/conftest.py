import locust  # noqa: F401 - first: gevent must monkey-patch before the tests import ssl, socket or threading users

from collections.abc import Iterator

import pytest

from tests.support import INSTALL_REDIS, missing_parts_line, need_command


@pytest.fixture(scope="session")
def redis_available() -> None:
    need_command("redis-server", INSTALL_REDIS)


@pytest.hookimpl(wrapper=True, tryfirst=True)  # outermost: the line comes after pytest's short summary
def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> Iterator[None]:
    """One line counting what was skipped for missing parts (see tests/support.py require()); nothing if nothing."""
    try:
        return (yield)
    finally:
        reasons = [
            report.longrepr[2]
            for report in terminalreporter.stats.get("skipped", [])
            if isinstance(report.longrepr, tuple) and len(report.longrepr) == 3
        ]
        if line := missing_parts_line(reasons):
            terminalreporter.write_line(line, yellow=True, bold=True)
