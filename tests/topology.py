"""Helpers for tests/test_docker.py: read the compose stack's files and run its parts as local processes.

Nothing here needs a Docker engine. Compose files are read the way compose reads them (``${VAR:-default}``
interpolation, then YAML), and a real Prometheus server is run from docker/prometheus/prometheus.yml with only its
scrape targets and interval rewritten for 127.0.0.1.
"""

from __future__ import annotations

import json
import re
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from tests.support import ROOT, Proc, free_port, running

DOCKER = ROOT / "docker"
COMPOSE_FILE = DOCKER / "docker-compose.yml"
ENV_EXAMPLE = DOCKER / ".env.example"
PROMETHEUS_CONFIG = DOCKER / "prometheus" / "prometheus.yml"
DASHBOARD = DOCKER / "grafana" / "dashboards" / "ratelimit.json"
K8S = DOCKER / "k8s"

# --- YAML -------------------------------------------------------------------------------------------------------


def load_yaml_all(text: str) -> list[Any]:
    """Every document of a YAML stream, as plain JSON-like data (safe loading: no tags, no code)."""
    return list(yaml.safe_load_all(text))


def load_yaml(text: str) -> Any:
    (doc,) = load_yaml_all(text)
    return doc


# --- compose ----------------------------------------------------------------------------------------------------

_VARIABLE = re.compile(r"\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?P<sep>:?-)?(?P<default>[^}]*)\}|(?P<escaped>\$))")


def compose_defaults(text: str) -> dict[str, str]:
    """Every ``${NAME:-default}`` of a compose file: name -> default (a name used twice must agree)."""
    found: dict[str, str] = {}
    for m in _VARIABLE.finditer(text):
        if m.group("braced"):
            name, default = m.group("braced"), m.group("default") if m.group("sep") else ""
            if found.setdefault(name, default) != default:
                raise AssertionError(f"${{{name}}} has two defaults: {found[name]!r} and {default!r}")
    return found


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's substitution: ``${X:-d}`` is d when X is unset or empty, ``${X-d}`` only when unset; ``$$`` is $."""

    def value(m: re.Match[str]) -> str:
        if m.group("escaped"):
            return "$"
        name, sep, default = m.group("braced"), m.group("sep"), m.group("default")
        current = env.get(name)
        if sep == ":-" and not current:
            return default
        if sep == "-" and current is None:
            return default
        return current or ""

    return _VARIABLE.sub(value, text)


def _interpolate_tree(node: Any, env: dict[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [_interpolate_tree(item, env) for item in node]
    if isinstance(node, dict):
        return {key: _interpolate_tree(value, env) for key, value in node.items()}
    return node


def load_compose(env: dict[str, str] | None = None) -> dict[str, Any]:
    """docker-compose.yml with ``env`` substituted (defaults for the rest), YAML merge keys resolved.

    Like compose, substitution happens in the parsed strings: ``${HEADLESS:-false}`` stays the string "false".
    """
    return _interpolate_tree(load_yaml(COMPOSE_FILE.read_text()), env or {})


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines; blank lines and ``#`` comment lines skipped (compose 1.x reads the rest of a line as value)."""
    values: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, sep, val = line.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise AssertionError(f"{path.name}:{number}: not KEY=VALUE: {line!r}")
        if key in values:
            raise AssertionError(f"{path.name}:{number}: {key} set twice")
        values[key] = val
    return values


def command(service: dict[str, Any]) -> list[str]:
    """A service's entrypoint override (if any) plus its command, as strings."""
    return [str(a) for a in (service.get("entrypoint") or []) + (service.get("command") or [])]


def flag(args: list[str], name: str) -> str:
    """The value after ``name`` in an argument list."""
    return args[args.index(name) + 1]


def with_flag(args: list[str], name: str, value: str) -> list[str]:
    """``args`` with the value after ``name`` replaced (the flag must be there: a rewrite never adds options)."""
    out = list(args)
    out[out.index(name) + 1] = value
    return out


def image_tag(image: str) -> str | None:
    """The tag of an image reference (None if it has none); a registry port is not a tag."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return last.rsplit(":", 1)[1] if ":" in last else None


# --- Prometheus -------------------------------------------------------------------------------------------------


def local_prometheus_config(addresses: dict[str, str], interval: str = "1s") -> dict[str, Any]:
    """docker/prometheus/prometheus.yml with each compose target (``service:port``) replaced by its local address
    and the scrape interval (and timeout, which may not exceed it) set to ``interval``; nothing else changes."""
    config = load_yaml(PROMETHEUS_CONFIG.read_text())
    config["global"]["scrape_interval"] = interval
    config["global"]["scrape_timeout"] = interval
    config["global"]["evaluation_interval"] = interval
    for job in config["scrape_configs"]:
        for static in job["static_configs"]:
            static["targets"] = [addresses[t] for t in static["targets"]]
    return config


class Prometheus:
    """A running Prometheus server and its HTTP API."""

    def __init__(self, proc: Proc, url: str) -> None:
        self.proc = proc
        self.url = url

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """Instant query (``at``: unix time, default now); the result vector."""
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        with urllib.request.urlopen(f"{self.url}/api/v1/query?{urllib.parse.urlencode(params)}", timeout=5) as r:
            body = json.load(r)
        assert body["status"] == "success", (expr, body)
        return body["data"]["result"]

    def values(self, expr: str, at: float | None = None, by: str | None = None) -> dict[str, float]:
        """label value (or '' without ``by``) -> sample value of an instant query."""
        return {(s["metric"].get(by, "") if by else ""): float(s["value"][1]) for s in self.query(expr, at)}

    def scalar(self, expr: str, at: float | None = None) -> float | None:
        result = self.query(expr, at)
        assert len(result) <= 1, (expr, result)
        return float(result[0]["value"][1]) if result else None

    def wait_until(self, expr: str, predicate: Any, timeout: float, interval: float = 0.2) -> float | None:
        """Poll ``scalar(expr)`` until ``predicate(value)``; returns the last value either way."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.scalar(expr)
            if predicate(value) or time.monotonic() > deadline:
                return value
            time.sleep(interval)


@contextmanager
def prometheus_server(config: dict[str, Any], workdir: Path, binary: str = "prometheus") -> Iterator[Prometheus]:
    """Prometheus on 127.0.0.1:<free port>, TSDB under ``workdir``; ready (GET /-/ready is 200) when yielded."""
    config_file = workdir / "prometheus.yml"
    config_file.write_text(json.dumps(config, indent=2))  # JSON is YAML: no emitter needed
    port = free_port()
    proc = Proc(
        [
            binary,
            f"--config.file={config_file}",
            f"--storage.tsdb.path={workdir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        cwd=workdir,
    )
    url = f"http://127.0.0.1:{port}"
    with running(proc):
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.popen.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"Prometheus did not become ready:\n{proc.output[-4000:]}")
            time.sleep(0.1)
        yield Prometheus(proc, url)


# --- demo limiter nodes -----------------------------------------------------------------------------------------


@contextmanager
def limiter_node(args: list[str]) -> Iterator[Proc]:
    """``python -m demolimiter <args>`` (args start with ``node``), running once it printed READY."""
    proc = Proc([sys.executable, "-m", "demolimiter", *args])
    with running(proc):
        proc.wait_for(r"^READY ", timeout=20)
        yield proc
