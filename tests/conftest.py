import locust  # noqa: F401 - first: gevent must monkey-patch before the tests import ssl, socket or threading users

import shutil

import pytest


@pytest.fixture(scope="session")
def redis_available() -> None:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (.ci/run installs it: apt-get install redis-server)")
