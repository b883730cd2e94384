"""Several declared policies at once: ``--policy-file PATH``, a TOML file of named policies.

    [policy.orders]              # the name: a `policy` label value in /metrics, a row of the verdict
    route = "/v1/orders"         # a glob over the request path ("/v1/orders/*"); omitted: any path
    method = "POST"              # or ["POST", "PUT"]; omitted: any method
    key = "tenant-*"             # a glob over the API key; omitted: any key
    algorithm = "token-bucket"   # as --limit-algorithm (auto too)
    limit = 20                   # as --limit (at least 1)
    window = 1                   # as --window
    burst = 0                    # as --limit-burst
    scope = "global"             # as --limit-scope
    cost = 1                     # units of the limit each request spends (a request may say otherwise)
    window-alignment = "any"     # as --window-alignment
    counts-rejected = false      # as --limit-counts-rejected
    delay = false                # as --limit-delay

A request falls under the first policy (in file order) whose match fits it; one that none fits is counted as
``unmatched`` and judged by none. ``--clock-skew`` and ``--strict-headers`` hold for every policy. The single-policy
flags (``--limit``, ``--window``, ...) are the short form of a file with one policy, named ``default``, that matches
every request. Bad input is one line naming the file, the policy, the field and the fix.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from rlsuite import policy as policy_module
from rlsuite.options import OptionError
from rlsuite.replay import MAX_COST
from rlsuite.routes import UNMATCHED, Route

OPTION = "policy-file"
MAX_POLICIES = 16  # each is a `policy` label value: /metrics stays small
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,39}$")
# field -> (the option it stands for, its default, the types it takes)
FIELDS: dict[str, tuple[str, Any, tuple[type, ...]]] = {
    "algorithm": ("limit-algorithm", "token-bucket", (str,)),
    "limit": ("limit", None, (int,)),
    "window": ("window", 1.0, (int, float)),
    "burst": ("limit-burst", 0, (int,)),
    "scope": ("limit-scope", "global", (str,)),
    "window-alignment": ("window-alignment", "any", (str,)),
    "counts-rejected": ("limit-counts-rejected", False, (bool,)),
    "delay": ("limit-delay", False, (bool,)),
}
MATCH_FIELDS = ("route", "method", "key", "cost")
EXAMPLE = '[policy.orders]\nroute = "/v1/orders"\nlimit = 20\nwindow = 1'


def load(path: str, opts: Any) -> list[policy_module.Policy]:
    """The policies of the file at ``path``, in order; ``opts`` gives the run-wide --clock-skew and
    --strict-headers. Raises OptionError (one line) for anything wrong."""
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise OptionError(OPTION, f"{path!r} cannot be read ({e.strerror})", "give the path of a TOML file") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise OptionError(OPTION, f"{path}: is not valid TOML ({e})", "fix the syntax") from None
    return parse(data, path, opts)


def parse(data: dict[str, Any], path: str, opts: Any) -> list[policy_module.Policy]:
    def fail(problem: str, fix: str) -> OptionError:
        return OptionError(OPTION, f"{path}: {problem}", fix)

    extra = sorted(set(data) - {"policy"})
    if extra:
        raise fail(f"has an unknown top-level key {extra[0]!r}", "declare policies as [policy.NAME] tables")
    tables = data.get("policy")
    if not isinstance(tables, dict) or not tables:
        raise fail("declares no policy", f"add one, e.g. {EXAMPLE!r}")
    if len(tables) > MAX_POLICIES:
        raise fail(f"declares {len(tables)} policies", f"declare at most {MAX_POLICIES} (each is a /metrics label)")
    policies = []
    for name, table in tables.items():
        if not NAME.match(name) or name == UNMATCHED:
            raise fail(
                f"policy name {name!r} is not usable",
                f"use letters, digits, '_', '.', '-' (at most 40, not {UNMATCHED!r})",
            )
        if not isinstance(table, dict):
            raise fail(f"policy {name!r} is not a table", f"write it as [policy.{name}]")
        policies.append(_policy(name, table, fail, opts))
    return policies


def _policy(name: str, table: dict[str, Any], fail: Any, opts: Any) -> policy_module.Policy:
    where = f"policy {name!r}"
    unknown = sorted(set(table) - set(FIELDS) - set(MATCH_FIELDS))
    if unknown:
        raise fail(f"{where} has an unknown field {unknown[0]!r}", f"use {', '.join([*MATCH_FIELDS, *FIELDS])}")
    if "limit" not in table:
        raise fail(f"{where} has no limit", "add e.g. limit = 20")
    values: dict[str, Any] = {}
    for field, (option, default, types) in FIELDS.items():
        value = table.get(field, default)
        if isinstance(value, bool) != (bool in types) or not isinstance(value, types):
            kind = " or ".join(t.__name__ for t in types)
            raise fail(f"{where}: {field} is {value!r}", f"give a {kind}, e.g. {field} = {default!r}")
        values[option.replace("-", "_")] = value
    if values["limit"] < 1:
        raise fail(f"{where}: limit is {values['limit']}", "give a limit of at least 1")
    options = SimpleNamespace(
        **values,
        clock_skew=opts.clock_skew,
        strict_headers=opts.strict_headers,
    )
    try:
        declared = policy_module.from_options(options)
    except OptionError as e:
        field = next((f for f, (option, _, _) in FIELDS.items() if option == e.option), e.option)
        raise fail(f"{where}: {field} {e.problem}", e.fix.replace(f"--{e.option} ", f"{field} = ")) from None
    assert declared is not None  # limit >= 1
    return replace(declared, route=_route(name, table, where, fail))


def _route(name: str, table: dict[str, Any], where: str, fail: Any) -> Route:
    path = table.get("route", "")
    if not isinstance(path, str) or (path and not path.startswith(("/", "*"))):
        raise fail(f"{where}: route is {path!r}", 'give a path or a glob starting with "/", e.g. route = "/v1/*"')
    method = table.get("method", [])
    methods = [method] if isinstance(method, str) else method
    if not isinstance(methods, list) or not all(isinstance(m, str) and m.isalpha() for m in methods):
        raise fail(f"{where}: method is {method!r}", 'give a method or a list, e.g. method = ["GET", "POST"]')
    key = table.get("key", "")
    if not isinstance(key, str):
        raise fail(f"{where}: key is {key!r}", 'give a glob over the API keys, e.g. key = "tenant-*"')
    cost = table.get("cost", 1)
    if isinstance(cost, bool) or not isinstance(cost, int) or not 1 <= cost <= MAX_COST:
        raise fail(f"{where}: cost is {cost!r}", f"give whole units from 1 to {MAX_COST}, e.g. cost = 5")
    return Route(name, path, tuple(m.upper() for m in methods), key, cost)
