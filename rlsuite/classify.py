"""What a response means for a rate-limiter test: admitted, limited, or an error of some kind.

200 is admitted. A rejection status (429 by default; nginx's limit_req answers 503) is limited: proof that the
limiter works, so Locust counts it as a success. Anything else is an error and a Locust failure, labelled by a
small fixed set of kinds so the failure table and the Prometheus series stay bounded.
"""

from __future__ import annotations

from collections.abc import Collection

ALLOWED = "allowed"
LIMITED = "limited"
ERROR = "error"
OUTCOMES = (ALLOWED, LIMITED, ERROR)

ADMITTED_STATUS = 200

# error kinds, the `kind` label of rlsuite_errors_total
REFUSED = "refused"
TIMEOUT = "timeout"
# the request never got a connection within --request-timeout: it waited in this process (for a free slot in the
# connection pool, or for the node's address) and was never sent, so the node is not to blame
POOL_TIMEOUT = "pool_timeout"
RESET = "reset"
HTTP_4XX = "http_4xx"
HTTP_5XX = "http_5xx"
HTTP_OTHER = "http_other"
TRANSPORT = "transport"
ERROR_KINDS = (REFUSED, TIMEOUT, POOL_TIMEOUT, RESET, HTTP_4XX, HTTP_5XX, HTTP_OTHER, TRANSPORT)
# errors of requests that never reached the limiter (it cannot have counted them); any other error may have
NEVER_SENT = frozenset({REFUSED, POOL_TIMEOUT})


class PoolTimeout(TimeoutError):
    """No connection to the node within --request-timeout (raised by the suite's connection pool)."""


def success_statuses(rejection_statuses: Collection[int]) -> frozenset[int]:
    """The statuses Locust counts as success: 200 and the rejection statuses. Any other is a failure."""
    return frozenset({ADMITTED_STATUS}) | frozenset(rejection_statuses)


def outcome_of(status: int, failed: bool) -> str:
    """Outcome of one request that Locust judged by ``success_statuses`` (``failed``: it was not among them, or no
    answer came)."""
    if failed:
        return ERROR
    return ALLOWED if status == ADMITTED_STATUS else LIMITED


def error_kind(status: int, error: BaseException | None) -> str:
    """Kind of a failed request, from its status (0 = no response) and the transport error, if any."""
    if status:
        if 400 <= status < 500:
            return HTTP_4XX
        if 500 <= status < 600:
            return HTTP_5XX
        return HTTP_OTHER
    # geventhttpclient wraps a timeout in its RetriesExceeded (``original``) and surfaces some socket errors wrapped
    # in its own ConnectionError, and gevent's Timeout is not an OSError, so the class name and message are checked
    # too
    if isinstance(error, PoolTimeout) or isinstance(getattr(error, "original", None), PoolTimeout):
        return POOL_TIMEOUT
    text = f"{type(error).__name__} {error}".lower()
    if isinstance(error, ConnectionRefusedError) or "refused" in text:
        return REFUSED
    if isinstance(error, TimeoutError) or "timeout" in text or "timed out" in text:
        return TIMEOUT
    if isinstance(error, ConnectionResetError | BrokenPipeError | ConnectionAbortedError):
        return RESET
    return TRANSPORT
