"""Serving /metrics from the one process that aggregates (master or standalone), never from workers.

With the web UI, /metrics is a route on Locust's own Flask app (:8089). Headless, a small gevent WSGI server serves
it on --metrics-port. A headless run ends by exiting, so the final counts could be missed by a scraper that polls
every 15 s: after the run, ``linger()`` keeps /metrics up until it has been scraped once more, bounded by
--metrics-linger.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Callable, Iterable
from typing import Any

from gevent.event import Event
from gevent.pywsgi import WSGIServer
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from rlsuite import options
from rlsuite.options import Option, OptionError

logger = logging.getLogger(__name__)


GROUP = "Prometheus export"
OPTIONS = (
    Option(
        "metrics-port",
        GROUP,
        type=int,
        default=9647,
        help="Headless runs serve /metrics on this port (0 = a free port, printed at start). "
        "With the web UI, /metrics is on the web UI port instead.",
    ),
    Option(
        "metrics-linger",
        GROUP,
        type=float,
        default=15.0,
        minimum=0,
        help="After a headless run, keep /metrics up until it is scraped once more, at most this many seconds "
        "(0 = exit at once).",
    ),
)


def check_options(opts: Any) -> None:
    port = options.get(opts, "metrics-port")
    if not 0 <= int(port) <= 65535:
        raise OptionError("metrics-port", f"must be 0-65535, got {port}", "set e.g. --metrics-port 9647")
    options.check(opts, OPTIONS)


class Exporter:
    """Renders the registry and counts scrapes, whichever server carries it."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry
        self._scraped = Event()
        self.scrapes = 0
        self.url: str | None = None
        self._server: WSGIServer | None = None

    def render(self) -> bytes:
        body = generate_latest(self._registry)
        self.scrapes += 1
        self._scraped.set()
        return body

    def wsgi_app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO", "/") not in ("/", "/metrics"):
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found: try /metrics\n"]
        body = self.render()
        start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST), ("Content-Length", str(len(body)))])
        return [body]

    def mount(self, web_ui: Any) -> None:
        """Add /metrics to Locust's web UI (it honours --web-login like Locust's own routes)."""
        from flask import Response

        @web_ui.app.route("/metrics")
        @web_ui.auth_required_if_enabled
        def metrics() -> Response:
            return Response(self.render(), mimetype=CONTENT_TYPE_LATEST)

    def serve(self, host: str, port: int) -> str:
        """Start the standalone server; raises OptionError when the port cannot be bound."""
        server = WSGIServer((host, port), self.wsgi_app, log=None, error_log=logger)
        try:
            server.start()
        except OSError as e:
            problem = (
                "is already in use"
                if e.errno == errno.EADDRINUSE
                else f"cannot be used ({os.strerror(e.errno) if e.errno else e})"
            )
            raise OptionError("metrics-port", f"{port} {problem}", "free the port or choose another one") from None
        self._server = server
        bound_host, bound_port = server.address[:2]
        shown = bound_host if bound_host not in ("", "0.0.0.0", "::") else "127.0.0.1"
        self.url = f"http://{shown}:{bound_port}/metrics"
        return self.url

    def linger(self, seconds: float) -> bool:
        """Wait until /metrics is scraped once more (True) or ``seconds`` pass (False)."""
        if self._server is None or seconds <= 0:
            return False
        self._scraped.clear()
        return bool(self._scraped.wait(seconds))

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(timeout=1)
            self._server = None
