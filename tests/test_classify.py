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
    failure_message,
    outcome_of,
)

NGINX = {429, 503}


@pytest.mark.parametrize(
    ("status", "rejection", "outcome"),
    [
        (200, {429}, ALLOWED),
        (429, {429}, LIMITED),
        (503, {429}, ERROR),  # a 5xx is never "limited" unless declared
        (503, NGINX, LIMITED),
        (201, {429}, ERROR),
        (404, {429}, ERROR),
        (0, {429}, ERROR),
    ],
)
def test_outcome(status, rejection, outcome):
    assert outcome_of(status, None, rejection) == outcome


def test_a_transport_error_is_never_admitted():
    assert outcome_of(200, ConnectionResetError(), {429}) == ERROR


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


def test_failure_messages_are_stable_so_locust_groups_them():
    assert failure_message(503, None) == "http_5xx: HTTP 503"
    assert failure_message(0, ConnectionRefusedError(111, "x")) == "refused: ConnectionRefusedError"
    assert failure_message(0, ConnectionRefusedError(111, "y")) == failure_message(0, ConnectionRefusedError(1, "z"))
