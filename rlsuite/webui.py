"""The rate-limiter view in Locust's web UI (work in progress: see issue 6)."""

from __future__ import annotations

from typing import Any


def mount(suite: Any, web_ui: Any) -> None:
    """Add the suite's routes and tab to Locust's web UI."""
