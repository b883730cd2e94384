from locust.argument_parser import LocustArgumentParser

import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest

from rlsuite import suite
from rlsuite.options import OptionError
from tests.support import LOCUST, LOCUSTFILE, ROOT


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


def run_cli(args, env=None):
    import os

    return subprocess.run(
        [*LOCUST, "-f", str(LOCUSTFILE), "--headless", "-t", "5s", "--metrics-port", "0", *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("args", "env", "option"),
    [
        (["--steady-rps", "0"], None, "--steady-rps"),
        (["--steady-rps", "fast"], None, "--steady-rps"),
        (["--burst-every", "5", "--burst-duration", "5"], None, "--burst-duration"),
        (["--node-hosts", "http://127.0.0.1:1,http://127.0.0.1:1"], None, "--node-hosts"),
        ([], {"LOCUST_BURST_MULTIPLIER": "0.2"}, "--burst-multiplier"),
    ],
)
def test_locust_exits_2_with_one_line_and_starts_nothing(args, env, option):
    result = run_cli(args, env)
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and option in errors[0], result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert "Prometheus metrics at" not in result.stderr and "Shape test starting" not in result.stderr


def test_all_bad_values_fail_fast_in_parallel():
    """The same check for every case of the unit table, through the real `locust` command (run concurrently)."""
    cases = [
        ["--node-hosts", ""],
        ["--rejection-statuses", "200"],
        ["--request-timeout", "0"],
        ["--metrics-port", "70000"],
        ["--stats-interval", "-1"],
        ["--request-path", "api"],
    ]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(run_cli, cases))
    for case, result in zip(cases, results, strict=True):
        assert result.returncode == 2 and case[0] in result.stderr and "Traceback" not in result.stderr, case
