"""Rate-limit header conformance: what a limiter advertises, and where its fields break the rules.

Rules (each a finding, counted per node; they fail the verdict only with --strict-headers):

- ``retry_after_missing``: a limited answer without ``Retry-After`` (RFC 6585 section 4 lets it out; clients need it).
- ``retry_after_malformed``: ``Retry-After`` neither delay-seconds nor an HTTP-date (RFC 9110 section 10.2.3).
- ``policy_malformed`` / ``ratelimit_malformed``: ``RateLimit-Policy`` / ``RateLimit`` not a Structured Fields list
  of items with an integer ``q`` / ``r`` (draft-ietf-httpapi-ratelimit-headers; the draft says such fields
  "MUST be ignored", so a client cannot use them).
- ``ratelimit_inconsistent``: remaining ``r`` above the quota ``q`` of the same policy, or a limited answer that
  says quota remains.
- ``x_ratelimit_malformed`` / ``x_ratelimit_inconsistent``: ``X-RateLimit-Limit/-Remaining/-Reset`` not
  non-negative integers, or remaining above limit.
- ``remaining_rose``: (fixed windows only) remaining went up between two requests of one key on one node within the
  same window, the second started after the first had its answer.

Parsing is pure; ``HeaderChecker`` keeps the little state the last rule needs.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

from geventhttpclient.header import Headers

RULES = (
    "retry_after_missing",
    "retry_after_malformed",
    "policy_malformed",
    "ratelimit_malformed",
    "ratelimit_inconsistent",
    "x_ratelimit_malformed",
    "x_ratelimit_inconsistent",
    "remaining_rose",
)

_STRING = r'"(?:[^"\\]|\\.)*"'
_TOKEN = r"[A-Za-z*][A-Za-z0-9_\-.:%*/!#$&'+^`|~]*"
_BARE = rf"(?:-?\d{{1,15}}(?:\.\d{{1,3}})?|{_STRING}|{_TOKEN}|:[A-Za-z0-9+/=]*:|\?[01])"
_KEY = r"[a-z*][a-z0-9_\-.*]*"
_ITEM = re.compile(rf"^\s*({_STRING}|{_TOKEN})((?:\s*;\s*{_KEY}(?:={_BARE})?)*)\s*$")
_PARAM = re.compile(rf";\s*({_KEY})(?:=({_BARE}))?")


def parse_list(value: str) -> list[tuple[str, dict[str, Any]]] | None:
    """A Structured Fields list of items with parameters, as RateLimit and RateLimit-Policy use; None if malformed."""
    items = []
    for member in _members(value):
        m = _ITEM.match(member)
        if m is None:
            return None
        name = m.group(1).strip('"')
        params: dict[str, Any] = {}
        for key, raw in _PARAM.findall(m.group(2)):
            params[key] = _bare(raw) if raw else True
        items.append((name, params))
    return items


def _members(value: str) -> list[str]:
    """Split a list on the commas that are not inside a quoted string."""
    members, start, quoted, escaped = [], 0, False, False
    for i, char in enumerate(value):
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == "," and not quoted:
            members.append(value[start:i])
            start = i + 1
    members.append(value[start:])
    return members


def _bare(raw: str) -> Any:
    if raw[0] == '"':
        return raw[1:-1]
    if raw[0] in "-0123456789":
        return float(raw) if "." in raw else int(raw)
    return raw


@functools.lru_cache(maxsize=1024)
def retry_after_ok(value: str) -> bool:
    value = value.strip()
    if value.isdigit():
        return True
    try:
        return parsedate_to_datetime(value) is not None
    except (TypeError, ValueError, IndexError):
        return False


# Answers repeat the same few field values (the policy never changes, remaining counts through a small range), so
# parsing is cached: checking every answer then costs a dictionary look-up, not a regex.
@functools.lru_cache(maxsize=4096)
def policies(value: str | None) -> dict[str, tuple[int, int | None]] | None:
    """RateLimit-Policy as {name: (quota q, window w)}; None when malformed, {} when absent."""
    if value is None:
        return {}
    items = parse_list(value)
    if items is None or any(not isinstance(p.get("q"), int) or p["q"] < 0 for _, p in items):
        return None
    return {name: (p["q"], p.get("w") if isinstance(p.get("w"), int) else None) for name, p in items}


@functools.lru_cache(maxsize=4096)
def remaining(value: str | None) -> dict[str, tuple[int, int | None]] | None:
    """RateLimit as {name: (remaining r, reset t)}; None when malformed, {} when absent."""
    if value is None:
        return {}
    items = parse_list(value)
    if items is None or any(not isinstance(p.get("r"), int) or p["r"] < 0 for _, p in items):
        return None
    return {name: (p["r"], p.get("t") if isinstance(p.get("t"), int) else None) for name, p in items}


def _non_negative_int(value: str | None) -> int | bool | None:
    """The integer, None when absent, False when malformed."""
    if value is None:
        return None
    value = value.strip()
    return int(value) if value.isdigit() else False


@dataclass(frozen=True)
class Fields:
    """What one combination of rate-limit field values says, worked out once (cached) for every answer carrying it."""

    findings: tuple[tuple[str, str], ...]  # (rule, example)
    remaining: int | None  # quota left, from RateLimit (or X-RateLimit-Remaining)
    reset: int | None  # seconds until the window resets, from RateLimit's t
    advertised: tuple[str, ...]


@functools.lru_cache(maxsize=4096)
def judge_fields(
    policy: str | None, ratelimit: str | None, x_limit: str | None, x_left: str | None, x_reset: str | None
) -> Fields:
    findings: list[tuple[str, str]] = []
    advertised: list[str] = []
    quota = policies(policy)
    if quota is None:
        findings.append(("policy_malformed", f"RateLimit-Policy: {policy}"))
        quota = {}
    for name, (q, w) in quota.items():
        advertised.append(f'RateLimit-Policy "{name}" q={q}' + (f" w={w}" if w is not None else ""))
    left = remaining(ratelimit)
    if left is None:
        findings.append(("ratelimit_malformed", f"RateLimit: {ratelimit}"))
        left = {}
    current: tuple[int, int | None] | None = None
    for name, (r, t) in left.items():
        current = current or (r, t)
        if name in quota and r > quota[name][0]:
            findings.append(("ratelimit_inconsistent", f"RateLimit r={r} above RateLimit-Policy q={quota[name][0]}"))
    limit, left_x, reset_x = _non_negative_int(x_limit), _non_negative_int(x_left), _non_negative_int(x_reset)
    if limit is False or left_x is False or reset_x is False:
        findings.append(("x_ratelimit_malformed", "X-RateLimit-Limit/-Remaining/-Reset not a non-negative integer"))
    else:
        if limit is not None:
            advertised.append(f"X-RateLimit-Limit {limit}")
        if limit is not None and left_x is not None and left_x > limit:
            findings.append(("x_ratelimit_inconsistent", f"X-RateLimit-Remaining {left_x} above the limit {limit}"))
        if current is None and left_x is not None:
            current = (left_x, None)
    r, t = current if current is not None else (None, None)
    return Fields(tuple(findings), r, t, tuple(advertised))


_has = dict.__contains__  # Headers is a dict of lower-cased names (its own __contains__ lower-cases again)


def _has_quota_fields(headers: Headers) -> bool:
    return _has(headers, "ratelimit-policy") or _has(headers, "ratelimit") or _has(headers, "x-ratelimit-limit")


def _fast_get(headers: Any) -> Any:
    """A field getter for an answer's headers. geventhttpclient's Headers is a dict of lower-cased names to (name,
    value) entries, and its own get() raises and catches KeyError for every absent field, which is most of them
    here: reading the dict directly keeps the check to about a microsecond per answer."""
    if type(headers) is not Headers:
        return headers.get

    def get(name: str) -> str | None:
        entry = dict.get(headers, name.lower())
        if entry is None:
            return None
        return entry[1] if isinstance(entry, tuple) else entry[-1][1]

    return get


class HeaderChecker:
    """Checks the answers of one process; findings go to a sink ``(rule, node, example)``."""

    def __init__(self, window_based: bool) -> None:
        self.window_based = window_based
        # (node, key) -> (answered at, earliest possible end of that window, remaining)
        self._last: dict[tuple[str, int], tuple[float, float, int]] = {}
        self._seen: set[tuple[str, ...]] = set()
        self.advertised: set[str] = set()  # distinct advertised policies, as text

    def check(
        self, headers: Any, limited: bool, node: str, key: int, start: float, answered: float, found: Any
    ) -> None:
        if not limited and type(headers) is Headers and not _has_quota_fields(headers):
            return  # an admission without quota fields (nginx's limit_req sends none): nothing to judge
        get = _fast_get(headers)
        if limited:
            retry_after = get("Retry-After")
            if retry_after is None:
                found("retry_after_missing", node, "a limited answer without Retry-After")
            elif not retry_after_ok(retry_after):
                found("retry_after_malformed", node, f"Retry-After: {retry_after}")
        policy, ratelimit, x_limit = get("RateLimit-Policy"), get("RateLimit"), get("X-RateLimit-Limit")
        if policy is None and ratelimit is None and x_limit is None:
            return  # no quota fields at all: nothing else to judge
        fields = judge_fields(
            policy,
            ratelimit,
            x_limit,
            None if x_limit is None else get("X-RateLimit-Remaining"),
            None if x_limit is None else get("X-RateLimit-Reset"),
        )
        for rule, example in fields.findings:
            found(rule, node, example)
        if limited and fields.remaining:
            found("ratelimit_inconsistent", node, f"a limited answer with remaining quota {fields.remaining}")
        if fields.advertised and fields.advertised not in self._seen and len(self._seen) < 8:
            self._seen.add(fields.advertised)  # a few distinct values are informative; more would be noise
            self.advertised.update(fields.advertised)
        if self.window_based and fields.remaining is not None and fields.reset is not None:
            # t is whole seconds rounded up, so the window ends somewhere in (answered + t - 1, answered + t]: only
            # a request that started before the earliest possible end is certainly in the same window.
            r = fields.remaining
            previous = self._last.get((node, key))
            if previous is not None and previous[0] < start < previous[1] and r > previous[2]:
                found("remaining_rose", node, f"remaining rose from {previous[2]} to {r} within one window")
            self._last[(node, key)] = (answered, answered + fields.reset - 1, r)
