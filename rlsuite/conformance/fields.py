"""The rate-limit fields of one answer, read as whichever generation of the header draft the server speaks.

Generations, newest first (draft-ietf-httpapi-ratelimit-headers):

- **draft-08 onwards** (the current text, -11): ``RateLimit-Policy: "default";q=100;w=60`` and
  ``RateLimit: "default";r=50;t=30``, Structured Fields lists of items. MUSTs checked: each member is an item whose
  value is a String (or a Token, as -08 to -10 allowed); ``q`` and ``r`` are required non-negative Integers; ``w`` is a
  non-zero non-negative Integer ("sub-second precision is not supported"); ``t`` is a non-negative Integer.
- **draft-07**: ``RateLimit: limit=100, remaining=50, reset=5`` (a Dictionary) and ``RateLimit-Policy: 100;w=60``.
- **drafts -00 to -06**: ``RateLimit-Limit`` (``100`` or ``100, 100;w=60``), ``RateLimit-Remaining``,
  ``RateLimit-Reset`` (delta seconds).
- **X-RateLimit-Limit / -Remaining / -Reset**: the convention before the draft (``Reset`` in delta seconds, or a
  Unix time as GitHub sends it).

``read`` is pure and cached: answers repeat the same few values.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

from rlsuite.headers import parse_list

LATEST = "draft-08+"
DRAFT_07 = "draft-07"
DRAFT_00 = "draft-00..06"
X_RATELIMIT = "X-RateLimit"
GENERATIONS = (LATEST, DRAFT_07, DRAFT_00, X_RATELIMIT)
DESCRIPTIONS = {
    LATEST: "RateLimit + RateLimit-Policy as Structured Fields lists (draft-08 onwards, the current text)",
    DRAFT_07: "RateLimit: limit=, remaining=, reset= (draft-07)",
    DRAFT_00: "RateLimit-Limit / -Remaining / -Reset (drafts -00 to -06)",
    X_RATELIMIT: "X-RateLimit-Limit / -Remaining / -Reset (before the draft)",
}
_INT = re.compile(r"^\s*(\d{1,15})\s*$")
_DICT_MEMBER = re.compile(r"^\s*([a-z*][a-z0-9_\-.*]*)\s*=\s*(-?\d{1,15}(?:\.\d{1,3})?)\s*(?:;.*)?$")
_OLD_POLICY = re.compile(r"^\s*\d{1,15}\s*(;\s*[a-z][a-z0-9_\-.*]*=[^,;]+\s*)*$")
EPOCH_SECONDS = 1_000_000_000  # an X-RateLimit-Reset above this is a Unix time, not a delta


@dataclass(frozen=True)
class Reading:
    """What one answer's fields say, and which rules they break."""

    generations: tuple[str, ...] = ()
    quota: int | None = None  # q / limit
    window: float | None = None  # w (seconds), when advertised
    remaining: int | None = None  # r / remaining
    reset: float | None = None  # t / reset, seconds from the answer
    malformed: tuple[str, ...] = ()  # MUSTs broken, as examples
    above_quota: tuple[str, ...] = ()  # remaining above the quota it belongs to


def _int(value: str | None) -> int | bool | None:
    """A non-negative integer field: the int, None when absent, False when malformed."""
    if value is None:
        return None
    m = _INT.match(value)
    return int(m.group(1)) if m else False


def _latest_policy(value: str) -> tuple[dict[str, tuple[int, float | None]] | None, list[str]]:
    items = parse_list(value)
    if items is None:
        return None, [f"RateLimit-Policy is not a Structured Fields list of items: {value}"]
    out: dict[str, tuple[int, float | None]] = {}
    bad: list[str] = []
    for name, params in items:
        q, w = params.get("q"), params.get("w")
        if not isinstance(q, int) or isinstance(q, bool) or q < 0:
            bad.append(f'RateLimit-Policy "{name}" has no non-negative Integer q: {value}')
            continue
        if w is not None and (not isinstance(w, int) or isinstance(w, bool) or w <= 0):
            bad.append(f'RateLimit-Policy "{name}" has w={w}, not a positive Integer (draft 3.1.3): {value}')
            w = w if isinstance(w, int | float) and not isinstance(w, bool) and w > 0 else None
        out[name] = (q, w)
    return out, bad


def _latest_limit(value: str) -> tuple[dict[str, tuple[int, int | None]] | None, list[str]]:
    items = parse_list(value)
    if items is None:
        return None, []
    out: dict[str, tuple[int, int | None]] = {}
    bad: list[str] = []
    for name, params in items:
        r, t = params.get("r"), params.get("t")
        if not isinstance(r, int) or isinstance(r, bool) or r < 0:
            bad.append(f'RateLimit "{name}" has no non-negative Integer r: {value}')
            continue
        if t is not None and (not isinstance(t, int) or isinstance(t, bool) or t < 0):
            bad.append(f'RateLimit "{name}" has t={t}, not a non-negative Integer (draft 4.1.2): {value}')
            t = None
        out[name] = (r, t)
    return out, bad


def _draft07(value: str) -> dict[str, float] | None:
    """``limit=100, remaining=50, reset=5`` as a dict; None unless it is that form."""
    out: dict[str, float] = {}
    for member in value.split(","):
        m = _DICT_MEMBER.match(member)
        if m is None:
            return None
        out[m.group(1)] = float(m.group(2))
    return out if {"limit", "remaining"} <= out.keys() or {"remaining", "reset"} <= out.keys() else None


@functools.lru_cache(maxsize=4096)
def read(fields: tuple[str | None, ...]) -> Reading:
    """The rate-limit fields of an answer (``traffic.FIELDS`` order)."""
    _ra, ratelimit, policy, rl_limit, rl_left, rl_reset, x_limit, x_left, x_reset, _date = (
        *fields,
        *([None] * 10),
    )[:10]
    generations: list[str] = []
    malformed: list[str] = []
    above: list[str] = []
    quota = window = remaining = reset = None
    policies: dict[str, tuple[int, float | None]] = {}
    if policy is not None:
        parsed, bad = _latest_policy(policy)
        if parsed is not None:
            policies = parsed
            generations.append(LATEST)
            malformed.extend(bad)
        elif _OLD_POLICY.match(policy.split(",")[0]):
            generations.append(DRAFT_07)  # -07's RateLimit-Policy: 100;w=60 (an Integer item)
        else:
            malformed.extend(bad)
        if policies:
            quota, window = next(iter(policies.values()))
    if ratelimit is not None:
        limits, bad = _latest_limit(ratelimit)
        old = _draft07(ratelimit) if limits is None else None
        if limits is not None:
            if LATEST not in generations:
                generations.append(LATEST)
            malformed.extend(bad)
            for name, (r, t) in limits.items():
                if remaining is None:
                    remaining, reset = r, t
                if name in policies and r > policies[name][0]:
                    above.append(f'RateLimit r={r} above RateLimit-Policy "{name}" q={policies[name][0]}')
        elif old is not None:
            if DRAFT_07 not in generations:
                generations.append(DRAFT_07)
            quota = int(old["limit"]) if "limit" in old else quota
            remaining = int(old["remaining"]) if "remaining" in old else None
            reset = old.get("reset")
            if quota is not None and remaining is not None and remaining > quota:
                above.append(f"RateLimit remaining={remaining} above limit={quota}")
        else:
            malformed.append(f"RateLimit is neither a Structured Fields list of items nor a dictionary: {ratelimit}")
    if rl_limit is not None or rl_left is not None or rl_reset is not None:
        generations.append(DRAFT_00)
        limit = _int(rl_limit.split(",")[0] if rl_limit else None)
        left, until = _int(rl_left), _int(rl_reset)
        if limit is False or left is False or until is False:
            malformed.append("RateLimit-Limit/-Remaining/-Reset not a non-negative integer")
        else:
            quota = limit if quota is None else quota
            remaining = left if remaining is None else remaining
            reset = until if reset is None else reset
            if limit is not None and left is not None and left > limit:
                above.append(f"RateLimit-Remaining {left} above RateLimit-Limit {limit}")
    if x_limit is not None or x_left is not None or x_reset is not None:
        generations.append(X_RATELIMIT)
        limit, left, until = _int(x_limit), _int(x_left), _int(x_reset)
        if limit is False or left is False or until is False:
            malformed.append("X-RateLimit-Limit/-Remaining/-Reset not a non-negative integer")
        else:
            quota = limit if quota is None else quota
            remaining = left if remaining is None else remaining
            if reset is None and until is not None and until < EPOCH_SECONDS:
                reset = until
            if limit is not None and left is not None and left > limit:
                above.append(f"X-RateLimit-Remaining {left} above X-RateLimit-Limit {limit}")
    return Reading(tuple(generations), quota, window, remaining, reset, tuple(malformed), tuple(above))


def retry_after(value: str | None, date: str | None = None) -> float | bool | None:
    """Seconds a ``Retry-After`` asks to wait: None when absent, False when malformed (neither delay-seconds nor an
    HTTP-date, RFC 9110 10.2.3). An HTTP-date counts from the answer's ``Date`` (else it cannot be placed: 0)."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return False
    if when is None:
        return False
    try:
        sent = parsedate_to_datetime(date) if date else None
    except (TypeError, ValueError, IndexError):
        sent = None
    return max(0.0, (when - sent).total_seconds()) if sent is not None else 0.0
