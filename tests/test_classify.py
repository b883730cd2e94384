import pytest

from rlsuite.classify import (
    ALLOWED,
    ERROR,
    HTTP_4XX,
    HTTP_5XX,
    LIMITED,
    REFUSED,
    RESET,
    TIMEOUT,
    TRANSPORT,
    error_kind,
    outcome_of,
    success_statuses,
)


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
    ],
)
def test_error_kind(status, error, kind):
    assert error_kind(status, error) == kind
