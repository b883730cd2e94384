"""The limiter nodes under test, and how their answers are judged (options and validation)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from rlsuite import options
from rlsuite.options import OptionError

# The demo cluster's addresses (python -m demolimiter): the suite runs out of the box against it.
DEMO_NODE_HOSTS = "http://127.0.0.1:8081,http://127.0.0.1:8082,http://127.0.0.1:8083"


def add_arguments(parser: Any) -> None:
    group = parser.add_argument_group("Rate-limiter targets")
    options.add(
        group,
        "node-hosts",
        type=str,
        default=DEMO_NODE_HOSTS,
        help="Comma-separated base URLs of the limiter nodes; requests go to them in round-robin order. "
        "Default: the demo cluster started by `python -m demolimiter`.",
    )
    options.add(group, "request-path", type=str, default="/", help="Path requested on every node.")
    options.add(
        group,
        "rejection-statuses",
        type=str,
        default="429",
        help="Comma-separated statuses that mean 'limited' and count as success (nginx limit_req uses 503).",
    )
    options.add(
        group,
        "request-timeout",
        type=float,
        default=2.0,
        help="Seconds to wait for a connection and for each response before counting a timeout failure.",
    )


@dataclass(frozen=True)
class Node:
    url: str  # base URL, no trailing slash
    name: str  # host:port, the `node` label and the Locust request name


@dataclass(frozen=True)
class Targets:
    nodes: tuple[Node, ...]
    path: str
    rejection_statuses: frozenset[int]
    timeout: float

    def url(self, node: Node) -> str:
        return node.url + self.path


def parse_nodes(raw: str) -> tuple[Node, ...]:
    fix = "give comma-separated base URLs, e.g. --node-hosts http://127.0.0.1:8081,http://127.0.0.1:8082"
    parts = [p.strip() for p in str(raw).split(",")]
    if not any(parts):
        raise OptionError("node-hosts", "is empty", fix)
    nodes: list[Node] = []
    for part in parts:
        if not part:
            raise OptionError("node-hosts", f"has an empty entry in {raw!r}", fix)
        split = urlsplit(part)
        if split.scheme not in ("http", "https") or not split.hostname:
            raise OptionError("node-hosts", f"entry {part!r} is not an http(s):// URL with a host", fix)
        try:
            split.port  # noqa: B018 - raises on a malformed port
        except ValueError:
            raise OptionError("node-hosts", f"entry {part!r} has an invalid port", fix) from None
        if split.path not in ("", "/") or split.query or split.fragment:
            raise OptionError(
                "node-hosts", f"entry {part!r} has a path; give base URLs only", "use --request-path for the path"
            )
        node = Node(url=f"{split.scheme}://{split.netloc}", name=split.netloc)
        if any(n.url == node.url for n in nodes):
            raise OptionError("node-hosts", f"lists {node.url} twice", "list each node once")
        nodes.append(node)
    return tuple(nodes)


def parse_statuses(raw: str) -> frozenset[int]:
    fix = "give comma-separated HTTP statuses, e.g. --rejection-statuses 429,503"
    statuses: set[int] = set()
    for part in str(raw).split(","):
        part = part.strip()
        if not part.isdigit() or not 100 <= int(part) <= 599:
            raise OptionError("rejection-statuses", f"has {part!r}, which is not an HTTP status", fix)
        if int(part) == 200:
            raise OptionError("rejection-statuses", "lists 200, the admitted status", "remove 200")
        statuses.add(int(part))
    return frozenset(statuses)


def from_options(opts: Any) -> Targets:
    path = str(opts.request_path)
    if not path.startswith("/"):
        raise OptionError("request-path", f"must start with '/', got {path!r}", "set e.g. --request-path /api")
    return Targets(
        nodes=parse_nodes(opts.node_hosts),
        path=path,
        rejection_statuses=parse_statuses(opts.rejection_statuses),
        timeout=options.number(opts, "request-timeout", above=0),
    )
