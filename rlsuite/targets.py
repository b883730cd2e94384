"""The limiter nodes under test, and how their answers are judged (options and validation)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any
from urllib.parse import urlsplit

from rlsuite import options
from rlsuite.options import Option, OptionError

# The demo cluster's addresses (python -m demolimiter): the suite runs out of the box against it.
DEMO_NODE_HOSTS = "http://127.0.0.1:8081,http://127.0.0.1:8082,http://127.0.0.1:8083"


GROUP = "Rate-limiter targets"
OPTIONS = (
    Option(
        "node-hosts",
        GROUP,
        type=str,
        default=DEMO_NODE_HOSTS,
        help="Comma-separated base URLs of the limiter nodes; requests go to them in round-robin order. "
        "Default: the demo cluster started by `python -m demolimiter`.",
    ),
    Option("request-path", GROUP, type=str, default="/", help="Path requested on every node."),
    Option(
        "rejection-statuses",
        GROUP,
        type=str,
        default="429",
        help="Comma-separated statuses that mean 'limited' and count as success (nginx limit_req uses 503).",
    ),
    Option(
        "api-keys",
        GROUP,
        type=str,
        default="",
        help="Comma-separated API keys to send, spread evenly over the requests (each key is its own limit "
        "partition); empty = no key header, one shared partition.",
    ),
    Option(
        "api-key-count",
        GROUP,
        type=int,
        default=0,
        help="Instead of --api-keys: send this many generated keys (rlsuite-key-1, rlsuite-key-2, ...).",
    ),
    Option("api-key-header", GROUP, type=str, default="X-Api-Key", help="Header that carries the API key."),
    Option(
        "request-timeout",
        GROUP,
        type=float,
        default=2.0,
        above=0,
        help="Seconds to wait for a connection and for each response before counting a timeout failure.",
    ),
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
    api_keys: tuple[str, ...] = ()  # empty: no key header
    api_key_header: str = "X-Api-Key"

    @cached_property
    def urls(self) -> tuple[str, ...]:
        """The request URL of each node, in node order (read for every slot, so made once)."""
        return tuple(node.url + self.path for node in self.nodes)

    @property
    def partitions(self) -> int:
        """Number of limit partitions the load is spread over (one when no key is sent)."""
        return max(1, len(self.api_keys))

    def key_index(self, slot: int) -> int:
        """The key of slot ``slot``: cycles once per round of nodes, so every node sees every key equally."""
        return (slot // len(self.nodes)) % self.partitions


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


def parse_keys(raw: str, count: int) -> tuple[str, ...]:
    keys = [k.strip() for k in str(raw).split(",")] if str(raw).strip() else []
    if any(not k or not k.isprintable() or " " in k for k in keys):
        raise OptionError("api-keys", f"has an empty or blank entry in {raw!r}", "give comma-separated keys")
    if len(set(keys)) != len(keys):
        raise OptionError("api-keys", "lists a key twice", "list each key once")
    if keys and count:
        raise OptionError("api-key-count", "cannot be combined with --api-keys", "use one of the two")
    if count < 0 or count > 10000:
        raise OptionError("api-key-count", f"must be 0-10000, got {count}", "set e.g. --api-key-count 10")
    return tuple(keys) or tuple(f"rlsuite-key-{i + 1}" for i in range(count))


def from_options(opts: Any) -> Targets:
    path = str(opts.request_path)
    if not path.startswith("/"):
        raise OptionError("request-path", f"must start with '/', got {path!r}", "set e.g. --request-path /api")
    header = str(opts.api_key_header).strip()
    if not header or not all(c.isalnum() or c in "-_" for c in header):
        raise OptionError("api-key-header", f"is not a header name: {header!r}", "set e.g. --api-key-header X-Api-Key")
    nodes = parse_nodes(opts.node_hosts)
    statuses = parse_statuses(opts.rejection_statuses)
    values = options.check(opts, OPTIONS)
    return Targets(
        nodes=nodes,
        path=path,
        rejection_statuses=statuses,
        timeout=values["request-timeout"],
        api_keys=parse_keys(opts.api_keys, int(values["api-key-count"])),
        api_key_header=header,
    )
