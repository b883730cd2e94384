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
