from locust.argument_parser import LocustArgumentParser

from concurrent.futures import ThreadPoolExecutor

import pytest

from rlsuite import suite
from rlsuite.options import OptionError
from tests.support import run_cli


def parse(*argv):
    parser = LocustArgumentParser()
    suite.add_arguments(parser)
    parser.add_argument("--run-time", dest="run_time", type=float, default=None)
    return parser.parse_args(list(argv))


def test_defaults_are_valid_and_typed():
    opts = parse()
    suite.check_options(opts)
    assert opts.node_hosts == "http://127.0.0.1:8081,http://127.0.0.1:8082,http://127.0.0.1:8083"
    assert (opts.steady_rps, opts.burst_multiplier, opts.burst_every, opts.burst_duration) == (100.0, 3.0, 30, 10)
    assert (opts.rejection_statuses, opts.request_timeout, opts.metrics_port, opts.metrics_linger) == (
        "429",
        2.0,
        9647,
        15.0,
    )


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["--node-hosts", ""], "node-hosts"),
        (["--node-hosts", "http://a:1,,http://b:2"], "node-hosts"),
        (["--node-hosts", "127.0.0.1:8081"], "node-hosts"),
        (["--node-hosts", "ftp://127.0.0.1:21"], "node-hosts"),
        (["--node-hosts", "http://127.0.0.1:1,http://127.0.0.1:1/"], "node-hosts"),
        (["--node-hosts", "http://127.0.0.1:99999"], "node-hosts"),
        (["--node-hosts", "http://127.0.0.1:1/api"], "node-hosts"),
        (["--steady-rps", "0"], "steady-rps"),
        (["--steady-rps", "-5"], "steady-rps"),
        (["--steady-rps", "nan"], "steady-rps"),
        (["--burst-multiplier", "0.5"], "burst-multiplier"),
        (["--burst-every", "0"], "burst-every"),
        (["--burst-every", "10", "--burst-duration", "10"], "burst-duration"),
        (["--burst-duration", "-1"], "burst-duration"),
        (["--rejection-statuses", "429,abc"], "rejection-statuses"),
        (["--rejection-statuses", "200"], "rejection-statuses"),
        (["--request-timeout", "0"], "request-timeout"),
        (["--request-path", "api"], "request-path"),
        (["--metrics-port", "70000"], "metrics-port"),
        (["--metrics-linger", "-1"], "metrics-linger"),
        (["--stats-interval", "-1"], "stats-interval"),
        (["--run-time", "0"], "run-time"),
    ],
)
def test_bad_values_name_the_option_and_the_fix(argv, option):
    with pytest.raises(OptionError) as info:
        suite.check_options(parse(*argv))
    message = str(info.value)
    assert message.startswith(f"--{option} ") and "; " in message and "\n" not in message


def test_environment_variables_and_config_files_are_checked_the_same_way(tmp_path):
    from_env = run_cli([], {"LOCUST_BURST_MULTIPLIER": "0.2"})
    conf = tmp_path / "bad.conf"
    conf.write_text("steady-rps = 0\n")
    from_conf = run_cli(["--config", str(conf)])
    for result, option in ((from_env, "--burst-multiplier"), (from_conf, "--steady-rps")):
        errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
        assert result.returncode == 2 and len(errors) == 1 and option in errors[0], result.stderr


BAD_INPUTS = [
    ["--node-hosts", ""],
    ["--node-hosts", "http://127.0.0.1:1,,http://127.0.0.1:2"],
    ["--node-hosts", "127.0.0.1:8081"],
    ["--node-hosts", "ftp://127.0.0.1:21"],
    ["--node-hosts", "http://127.0.0.1:1,http://127.0.0.1:1"],
    ["--node-hosts", "http://127.0.0.1:99999"],
    ["--steady-rps", "0"],
    ["--steady-rps", "-5"],
    ["--steady-rps", "fast"],
    ["--burst-multiplier", "0.5"],
    ["--burst-every", "2.5"],
    ["--burst-every", "5", "--burst-duration", "5"],
    ["--burst-duration", "-1"],
    ["--rejection-statuses", "429,abc"],
    ["--rejection-statuses", "200"],
    ["--request-timeout", "0"],
    ["--request-path", "api"],
    ["--api-keys", "a,a"],
    ["--api-key-count", "-3"],
    ["--limit", "-10"],
    ["--limit", "10", "--window", "0"],
    ["--limit", "10", "--limit-algorithm", "leaky"],
    ["--limit", "10", "--limit-scope", "cluster"],
    ["--window", "0"],  # checked even with no limit declared
    ["--limit", "10", "--clock-skew", "0.5"],
    ["--limit", "10", "--window-alignment", "epoch"],
    ["--max-send-delay", "-1"],
    ["--metrics-port", "70000"],
    ["--metrics-linger", "-1"],
    ["--stats-interval", "-1"],
]


def option_of(case: list[str]) -> str:
    """The option a case gets wrong: the last one given (the ones before it only set the scene)."""
    return case[-2]


def test_every_bad_input_is_one_line_naming_the_option_exit_2_and_nothing_started():
    assert len(BAD_INPUTS) >= 20
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(run_cli, BAD_INPUTS))
    for case, result in zip(BAD_INPUTS, results, strict=True):
        lines = [line for line in result.stderr.splitlines() if "error" in line.lower()]
        assert result.returncode == 2, (case, result.stderr)
        assert len(lines) == 1 and option_of(case) in lines[0], (case, result.stderr)
        assert "Traceback" not in result.stderr + result.stdout, case
        assert "Prometheus metrics at" not in result.stderr and "Shape test starting" not in result.stderr, case


# -- --policy-file ---------------------------------------------------------------------------------------------------

GOOD_POLICIES = """
[policy.orders]
route = "/v1/orders/*"
method = ["post", "PUT"]
key = "tenant-*"
algorithm = "fixed-window"
window-alignment = "epoch"
limit = 20
window = 60
scope = "per-node"
cost = 2

[policy.rest]
limit = 100
"""


def test_a_policy_file_declares_named_policies_matched_in_order(tmp_path):
    from rlsuite.routes import Router

    path = tmp_path / "policies.toml"
    path.write_text(GOOD_POLICIES)
    orders, rest = suite.policy.declared(parse("--policy-file", str(path)))
    assert (orders.name, orders.scope, orders.spec.algorithm, orders.spec.limit, orders.spec.window) == (
        "orders",
        "per-node",
        "fixed-window",
        20,
        60.0,
    )
    assert (orders.route.path, orders.route.methods, orders.route.key, orders.route.cost) == (
        "/v1/orders/*",
        ("POST", "PUT"),
        "tenant-*",
        2,
    )
    assert (rest.spec.algorithm, rest.spec.limit, rest.route.matches_all) == ("token-bucket", 100, True)
    router = Router([orders.route, rest.route], ("tenant-a", "other"))
    assert router.index("POST", "http://n:1/v1/orders/7?x=1", 0) == 0
    assert router.index("POST", "http://n:1/v1/orders/7?x=1", 1) == 1  # another key: the next policy that fits
    assert router.index("GET", "http://n:1/v1/orders/7", 0) == 1
    assert router.names == ["orders", "rest", "unmatched"]
    assert Router([orders.route], ("tenant-a",)).index("GET", "http://n:1/", 0) == 1  # none fits: unmatched
    # the single-policy flags are a one-policy file that matches everything
    (single,) = suite.policy.declared(parse("--limit", "10"))
    assert (single.name, single.route.matches_all, single.route.cost) == ("default", True, 1)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("[policy.a]\nlimt = 5\n", ["policy 'a'", "unknown field 'limt'", "limit"]),
        ("[policy.a]\nwindow = 1\n", ["policy 'a'", "no limit", "limit = 20"]),
        ('[policy.a]\nlimit = "ten"\n', ["policy 'a'", "limit is 'ten'", "int"]),
        ("[policy.a]\nlimit = 0\n", ["limit is 0", "at least 1"]),
        ("[policy.a]\nlimit = 5\nwindow = 0\n", ["policy 'a'", "window must be above 0"]),
        ('[policy.a]\nlimit = 5\nalgorithm = "leaky"\n', ["policy 'a'", "algorithm is 'leaky'", "token-bucket"]),
        ('[policy.a]\nlimit = 5\nscope = "cluster"\n', ["scope is 'cluster'", "per-node"]),
        ("[policy.a]\nlimit = 5\ncost = 0\n", ["cost is 0", "whole units"]),
        ('[policy.a]\nlimit = 5\nroute = "v1"\n', ["route is 'v1'", 'starting with "/"']),
        ("[policy.a]\nlimit = 5\nmethod = 3\n", ["method is 3"]),
        ("limit = 5\n", ["unknown top-level key 'limit'", "[policy.NAME]"]),
        ("", ["declares no policy"]),
        ("[policy.unmatched]\nlimit = 5\n", ["not usable"]),
        ("[policy.a\nlimit = 5\n", ["is not valid TOML"]),
    ],
)
def test_a_bad_policy_file_is_one_line_naming_the_file_the_policy_the_field_and_the_fix(tmp_path, text, words):
    path = tmp_path / "policies.toml"
    path.write_text(text)
    with pytest.raises(OptionError) as info:
        suite.check_options(parse("--policy-file", str(path)))
    message = str(info.value)
    assert message.startswith(f"--policy-file {path}") and "; " in message and "\n" not in message, message
    for word in words:
        assert word in message, message


def test_a_missing_policy_file_or_one_beside_limit_stops_locust_with_one_line(tmp_path):
    good = tmp_path / "good.toml"
    good.write_text(GOOD_POLICIES)
    with ThreadPoolExecutor(2) as pool:
        results = list(
            pool.map(
                run_cli, [["--policy-file", str(tmp_path / "nope.toml")], ["--limit", "5", "--policy-file", str(good)]]
            )
        )
    for result, words in zip(
        results, (["nope.toml", "cannot be read"], ["cannot be combined with --limit"]), strict=True
    ):
        lines = [line for line in result.stderr.splitlines() if "error" in line.lower()]
        assert result.returncode == 2 and len(lines) == 1 and "--policy-file" in lines[0], result.stderr
        assert all(w in lines[0] for w in words) and "Traceback" not in result.stderr, result.stderr
