from geventhttpclient.header import Headers

from rlsuite.headers import HeaderChecker, parse_list, policies, remaining, retry_after_ok


def h(**fields):
    headers = Headers()
    for k, v in fields.items():
        headers[k.replace("_", "-")] = v
    return headers


def check(checker, headers, limited=False, start=0.0, answered=0.001):
    found = []
    checker.check(headers, limited, "n1", 0, start, answered, lambda *a: found.append(a[0]))
    return found


def test_structured_field_lists():
    assert parse_list('"default";q=100;w=60') == [("default", {"q": 100, "w": 60})]
    assert parse_list('"burst";q=10;w=1, "day";q=1000;w=86400') == [
        ("burst", {"q": 10, "w": 1}),
        ("day", {"q": 1000, "w": 86400}),
    ]
    assert parse_list('"a,b";q=1') == [("a,b", {"q": 1})]
    assert parse_list("q=;;") is None
    assert policies('"d";w=1') is None  # no quota
    assert remaining('"d";r=-1') is None
    assert remaining('"d";r=5;t=2') == {"d": (5, 2)}


def test_retry_after_forms():
    assert retry_after_ok("120") and retry_after_ok("Wed, 21 Oct 2015 07:28:00 GMT")
    assert not retry_after_ok("soon") and not retry_after_ok("-1")


def test_conformant_answers_have_no_findings_and_the_policy_is_advertised():
    c = HeaderChecker(window_based=True)
    assert check(c, h(RateLimit_Policy='"default";q=100;w=1', RateLimit='"default";r=99;t=1')) == []
    assert (
        check(
            c, h(RateLimit_Policy='"default";q=100;w=1', RateLimit='"default";r=0;t=1', Retry_After="1"), limited=True
        )
        == []
    )
    assert c.advertised == {'RateLimit-Policy "default" q=100 w=1'}


def test_each_rule():
    c = HeaderChecker(window_based=True)
    assert check(c, h(), limited=True) == ["retry_after_missing"]
    assert check(c, h(Retry_After="later"), limited=True) == ["retry_after_malformed"]
    assert check(c, h(RateLimit_Policy="q=oops")) == ["policy_malformed"]
    assert check(c, h(RateLimit='"d";t=1')) == ["ratelimit_malformed"]
    assert check(c, h(RateLimit_Policy='"d";q=5', RateLimit='"d";r=9;t=1')) == ["ratelimit_inconsistent"]
    assert check(c, h(RateLimit='"d";r=3;t=1', Retry_After="1"), limited=True) == ["ratelimit_inconsistent"]
    assert check(c, h(X_RateLimit_Limit="ten")) == ["x_ratelimit_malformed"]
    assert check(c, h(X_RateLimit_Limit="10", X_RateLimit_Remaining="11")) == ["x_ratelimit_inconsistent"]


def test_remaining_may_not_rise_within_a_window_but_may_after_it():
    c = HeaderChecker(window_based=True)
    assert check(c, h(RateLimit='"d";r=5;t=10'), start=0.0, answered=0.01) == []
    assert check(c, h(RateLimit='"d";r=7;t=10'), start=0.02, answered=0.03) == ["remaining_rose"]
    assert check(c, h(RateLimit='"d";r=9;t=10'), start=10.5, answered=10.6) == []  # the next window
    one_second = HeaderChecker(window_based=True)  # t=1 (rounded up): the window may have turned at any moment
    assert check(one_second, h(RateLimit='"d";r=0;t=1'), start=0.0, answered=0.01) == []
    assert check(one_second, h(RateLimit='"d";r=19;t=1'), start=0.5, answered=0.51) == []
    overlapping = HeaderChecker(window_based=True)  # answers of overlapping requests may come in any order
    assert check(overlapping, h(RateLimit='"d";r=5;t=10'), start=0.0, answered=0.02) == []
    assert check(overlapping, h(RateLimit='"d";r=6;t=10'), start=0.01, answered=0.03) == []
    token_bucket = HeaderChecker(window_based=False)  # a bucket refills: remaining rising is fine
    check(token_bucket, h(RateLimit='"d";r=5;t=1'))
    assert check(token_bucket, h(RateLimit='"d";r=7;t=1'), start=0.5, answered=0.6) == []
