import pytest
from geventhttpclient.useragent import RetriesExceeded

from rlsuite.classify import (
    ALLOWED,
    ERROR,
    ERROR_KINDS,
    HTTP_4XX,
    HTTP_5XX,
    LIMITED,
    POOL_TIMEOUT,
    REFUSED,
    RESET,
    TIMEOUT,
    TRANSPORT,
    PoolTimeout,
    error_kind,
    outcome_of,
    success_statuses,
)
from rlsuite.connections import RequestTimeout


def test_success_is_200_and_the_rejection_statuses_only():
    assert success_statuses({429}) == {200, 429}
    assert success_statuses({429, 503}) == {200, 429, 503}  # nginx limit_req answers 503
    assert 201 not in success_statuses({429}) and 503 not in success_statuses({429})


@pytest.mark.parametrize(
    ("status", "failed", "outcome"),
    [(200, False, ALLOWED), (429, False, LIMITED), (503, False, LIMITED), (503, True, ERROR), (0, True, ERROR)],
)
def test_outcome_follows_what_locust_judged(status, failed, outcome):
    assert outcome_of(status, failed) == outcome


@pytest.mark.parametrize(
    ("status", "error", "kind"),
    [
        (404, None, HTTP_4XX),
        (502, None, HTTP_5XX),
        (0, ConnectionRefusedError(111, "Connection refused"), REFUSED),
        (0, TimeoutError("timed out"), TIMEOUT),
        (0, ConnectionResetError(104, "reset"), RESET),
        (0, BrokenPipeError(), RESET),
        (0, OSError("something else"), TRANSPORT),
        # the suite's own: no connection within --request-timeout (never sent), or no full answer within it
        (0, PoolTimeout("pool timeout: no connection to 127.0.0.1:8081 within --request-timeout 2s"), POOL_TIMEOUT),
        (0, RequestTimeout(), TIMEOUT),
        # as Locust sees them: geventhttpclient wraps a timeout in RetriesExceeded (max_retries 0)
        (0, RetriesExceeded("http://127.0.0.1:8081/", 0, original=PoolTimeout("pool timeout")), POOL_TIMEOUT),
        (0, RetriesExceeded("http://127.0.0.1:8081/", 0, original=RequestTimeout()), TIMEOUT),
        (0, RetriesExceeded("http://127.0.0.1:8081/", 0, original=TimeoutError("timed out")), TIMEOUT),
    ],
)
def test_error_kind(status, error, kind):
    assert error_kind(status, error) == kind


def test_every_kind_is_a_label_value_and_pool_timeouts_are_their_own():
    assert POOL_TIMEOUT in ERROR_KINDS and len(set(ERROR_KINDS)) == len(ERROR_KINDS) == 8
    assert isinstance(PoolTimeout("x"), TimeoutError)  # Locust counts it as a failure, like any timeout
