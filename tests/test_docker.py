"""The docker/ stack: compose, Prometheus, Grafana and the Kubernetes recipe, checked without a Docker engine.

The compose file is validated by docker-compose itself and its rules (pinned images, healthchecks, start order,
scalable workers) are checked on the resolved config. Then the same topology runs as local processes on 127.0.0.1,
with the commands and settings read from docker-compose.yml: redis, three limiter nodes on the redis backend, a real
Prometheus scraping them with docker/prometheus/prometheus.yml, a headless Locust master and two workers. The counts
must agree everywhere, and every query of the Grafana dashboard must return data.
"""

import json
import math
import os
import re
import shlex
import subprocess
import time
import tomllib
from contextlib import ExitStack, contextmanager

import pytest

from tests.support import (
    INSTALL_COMPOSE,
    INSTALL_PROMETHEUS,
    LOCUST,
    LOCUSTFILE,
    ROOT,
    Proc,
    free_port,
    need_command,
    redis_server,
    running,
    scrape,
)
from tests.topology import (
    COMPOSE_FILE,
    DASHBOARD,
    DOCKER,
    ENV_EXAMPLE,
    K8S,
    PROMETHEUS_CONFIG,
    command,
    compose_defaults,
    flag,
    image_tag,
    interpolate,
    limiter_node,
    load_compose,
    load_yaml,
    load_yaml_all,
    local_prometheus_config,
    prometheus_server,
    read_env_file,
    with_flag,
)

LIMITERS = ("limiter1", "limiter2", "limiter3")
PYTHON_SERVICES = ("master", "worker", *LIMITERS)
PROJECT_VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


@pytest.fixture(scope="module")
def compose():
    """docker-compose.yml with its defaults (= docker/.env.example, checked below)."""
    return load_compose()


def locust_env_vars() -> set[str]:
    """Every LOCUST_* variable Locust and the suite understand (a misspelt one would be silently ignored)."""
    from locust.argument_parser import get_parser

    from rlsuite import suite

    parser = get_parser()
    suite.add_arguments(parser)
    return {a.env_var for a in parser._actions if getattr(a, "env_var", None)}


def assert_pinned(image: str) -> None:
    tag = image_tag(image)
    assert tag and tag != "latest" and re.search(r"\d+\.\d+\.\d+", tag), f"{image}: pin an exact x.y.z version"


# --- docker-compose itself ---------------------------------------------------------------------------------------


def compose_cli() -> str:
    return need_command("docker-compose", INSTALL_COMPOSE)


def test_docker_compose_accepts_the_file_and_the_resolved_config_follows_the_rules():
    # A clean environment: a STEADY_RPS or WORKERS exported in the caller's shell would win over the env file.
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/root")}
    base = [compose_cli(), "-f", str(COMPOSE_FILE), "--env-file", str(ENV_EXAMPLE), "config"]
    quiet = subprocess.run([*base, "-q"], capture_output=True, text=True, env=env, cwd=ROOT)
    assert quiet.returncode == 0, quiet.stderr
    done = subprocess.run(base, capture_output=True, text=True, env=env, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "WARNING" not in done.stderr, done.stderr  # e.g. "The X variable is not set"
    services = load_yaml(done.stdout)["services"]

    assert set(services) == {"redis", *LIMITERS, "prometheus", "grafana", "master", "worker"}
    for name, service in services.items():
        assert_pinned(service["image"])
        assert "latest" not in json.dumps(service), name
    # one image, built from docker/Dockerfile, for every Python process; tagged with the project's version
    assert {services[s]["image"] for s in PYTHON_SERVICES} == {f"rlsuite:{PROJECT_VERSION}"}
    for name in PYTHON_SERVICES:
        assert services[name]["build"]["dockerfile"] == "docker/Dockerfile", name
        assert services[name]["build"]["context"] == str(ROOT), name
        assert services[name]["init"] is True, name  # a PID 1 that forwards SIGTERM
        assert isinstance(services[name]["command"], list), f"{name}: exec form, so signals reach the process"

    assert services["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    for name in LIMITERS:
        service = services[name]
        check = service["healthcheck"]["test"]
        assert check[:2] == ["CMD", "python"] and "http://127.0.0.1:8080/healthz" in check[-1], name
        assert service["depends_on"] == {"redis": {"condition": "service_healthy"}}, name
        args = command(service)
        assert args[:4] == ["python", "-m", "demolimiter", "node"]
        # the node label is host:port exactly as the master's --node-hosts spells the node
        assert flag(args, "--node-name") == f"{name}:8080" and flag(args, "--port") == "8080"
        assert flag(args, "--backend") == "redis" and flag(args, "--redis-url") == "redis://redis:6379/0"
        assert flag(args, "--host") == "0.0.0.0"

    master = services["master"]
    assert master["command"][:3] == ["-f", "locustfiles/ratelimit.py", "--master"]
    hosts = flag(master["command"], "--node-hosts").split(",")
    assert hosts == [f"http://{name}:8080" for name in LIMITERS]
    assert {n: d["condition"] for n, d in master["depends_on"].items()} == {
        **dict.fromkeys(LIMITERS, "service_healthy"),
        "prometheus": "service_healthy",
    }
    assert any(p.endswith(":8089:8089/tcp") or p.endswith(":8089:8089") for p in map(str, master["ports"]))
    assert master["environment"]["LOCUST_METRICS_PORT"] == "8089"
    assert set(master["environment"]) <= locust_env_vars()
    # the suite judges runs against the limit the nodes enforce: both come from the same variables
    assert declared_limit(master["environment"]) == enforced_limit(command(services["limiter1"]))

    worker = services["worker"]
    assert worker["command"] == ["-f", "locustfiles/ratelimit.py", "--worker", "--master-host", "master"]
    assert worker["restart"] == "unless-stopped"
    assert "container_name" not in worker and "ports" not in worker  # both would stop `--scale worker=N`
    assert worker["depends_on"] == {"master": {"condition": "service_started"}}
    assert set(worker.get("environment", {})) <= locust_env_vars()

    assert "/-/ready" in services["prometheus"]["healthcheck"]["test"][-1]
    assert all(not n.get("container_name") for n in services.values())


def declared_limit(env):
    """The limit a master's LOCUST_* variables declare to the suite."""
    keys = ("LOCUST_LIMIT", "LOCUST_WINDOW", "LOCUST_LIMIT_BURST", "LOCUST_LIMIT_ALGORITHM", "LOCUST_LIMIT_SCOPE")
    return [str(env[k]) for k in keys]


def enforced_limit(args):
    """The same, from a limiter node's flags."""
    return [flag(args, f) for f in ("--limit", "--window", "--burst", "--algorithm", "--scope")]


def test_every_compose_variable_is_documented_in_env_example_with_its_default():
    defaults = compose_defaults(COMPOSE_FILE.read_text())
    documented = read_env_file(ENV_EXAMPLE)
    assert set(documented) == set(defaults), {
        "missing from .env.example": sorted(set(defaults) - set(documented)),
        "not used by docker-compose.yml": sorted(set(documented) - set(defaults)),
    }
    assert documented == defaults
    text = ENV_EXAMPLE.read_text().splitlines()
    for i, line in enumerate(text):
        if line and not line.startswith("#"):
            assert text[i - 1].startswith("#"), f".env.example: {line!r} has no comment above it"
    for key in ("RLSUITE_IMAGE", "PYTHON_IMAGE", "REDIS_IMAGE", "PROMETHEUS_IMAGE", "GRAFANA_IMAGE"):
        assert_pinned(documented[key])


def test_dockerfile_pins_its_base_runs_unprivileged_and_uses_exec_form():
    text = (DOCKER / "Dockerfile").read_text()
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.M).group(1)
    assert_pinned(base)
    assert base == read_env_file(ENV_EXAMPLE)["PYTHON_IMAGE"]
    assert re.search(r"^FROM \$\{PYTHON_IMAGE\}$", text, re.M)
    assert "PYTHONUNBUFFERED=1" in text
    user = re.search(r"^USER (\S+)$", text, re.M).group(1)
    assert user.split(":")[0].isdigit() and user.split(":")[0] != "0"
    for instruction in ("ENTRYPOINT", "CMD"):
        line = re.search(rf"^{instruction} (.+)$", text, re.M).group(1)
        assert json.loads(line), f"{instruction} must be exec form (a JSON list)"
    assert re.search(r"^RUN pip install \.$", text, re.M)
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", ".git"} <= {p.strip("/") for p in ignored}


def test_prometheus_scrapes_the_master_and_every_limiter_of_compose(compose):
    config = load_yaml(PROMETHEUS_CONFIG.read_text())
    targets = {
        job["job_name"]: [target for static in job["static_configs"] for target in static["targets"]]
        for job in config["scrape_configs"]
    }
    assert targets == {"rlsuite": ["master:8089"], "demolimiter": [f"{n}:8080" for n in LIMITERS]}
    assert config["global"]["scrape_interval"] == "2s"
    mount = compose["services"]["prometheus"]["volumes"][0]
    assert mount.startswith("./prometheus/prometheus.yml:/etc/prometheus/prometheus.yml")


def test_grafana_provisioning_and_dashboard_agree(compose):
    provisioning = DOCKER / "grafana" / "provisioning"
    (datasource,) = load_yaml((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"]
    assert datasource["type"] == "prometheus" and datasource["url"] == "http://prometheus:9090"
    (provider,) = load_yaml((provisioning / "dashboards" / "dashboards.yml").read_text())["providers"]
    volumes = compose["services"]["grafana"]["volumes"]
    assert f"./grafana/dashboards:{provider['options']['path']}:ro" in volumes
    assert "./grafana/provisioning:/etc/grafana/provisioning:ro" in volumes

    dashboard = json.loads(DASHBOARD.read_text())
    exprs = dashboard_exprs(dashboard)
    assert len(exprs) >= 10
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == datasource["uid"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == datasource["uid"], panel["title"]
    text = " ".join(exprs)
    for needed in (
        "rlsuite_requests_total",
        "rlsuite_request_duration_seconds_bucket",
        "rlsuite_mode",
        "rlsuite_target_rps",
        'demolimiter_requests_total{decision="admitted"}',
        "demolimiter_limit_requests / demolimiter_limit_window_seconds",
    ):
        assert needed in text, needed
    assert "rate(rlsuite_requests_total[$__rate_interval])" in text
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def dashboard_exprs(dashboard):
    return [t["expr"] for p in dashboard["panels"] for t in p["targets"]]


# --- Kubernetes --------------------------------------------------------------------------------------------------


def k8s_documents():
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        for doc in load_yaml_all(path.read_text()):
            if doc is not None:
                docs.append((path.name, doc))
    return docs


def test_k8s_recipe_parses_and_runs_what_compose_runs(compose):
    docs = k8s_documents()
    assert docs
    by_kind = {}
    for name, doc in docs:
        assert {"apiVersion", "kind", "metadata"} <= set(doc), name
        by_kind.setdefault(doc["kind"], []).append(doc)
        for image in re.findall(r'"image": "([^"]+)"', json.dumps(doc)):
            assert_pinned(image)
    services = compose["services"]

    (test,) = by_kind["LocustTest"]
    assert test["apiVersion"] == "locust.io/v1"
    spec = test["spec"]
    # the fields of Locust's operator (docs/kubernetes-operator.rst); no others, the CRD would reject them
    assert set(spec) <= {
        "image", "workers", "args", "env", "locustfile", "labels", "annotations", "master", "worker",
        "imagePullPolicy", "imagePullSecrets", "metrics",
    }  # fmt: skip
    assert spec["image"] == services["master"]["image"]
    assert isinstance(spec["workers"], int) and spec["workers"] >= 1
    args = shlex.split(spec["args"])
    # the operator adds --master / --worker --master-host; the rest is what compose's master runs
    assert args[:2] == services["master"]["command"][:2]  # -f locustfiles/ratelimit.py
    env = {e["name"]: e["value"] for e in spec["env"]}
    assert all(isinstance(v, str) for v in env.values())
    assert set(env) <= locust_env_vars()
    compose_env = services["master"]["environment"]
    for key, value in env.items():
        if key in compose_env:
            assert value == str(compose_env[key]), key
    annotations = spec["master"]["annotations"]
    assert annotations["prometheus.io/port"] == env["LOCUST_METRICS_PORT"] == "8089"

    # the demo limiter: one StatefulSet, its pods addressed one by one through the headless Service
    (statefulset,) = by_kind["StatefulSet"]
    sts = statefulset["spec"]
    (container,) = sts["template"]["spec"]["containers"]
    assert container["image"] == services["limiter1"]["image"]
    k8s_args = container["command"] + container["args"]
    compose_args = command(services["limiter1"])
    assert with_flag(k8s_args, "--node-name", "X") == with_flag(compose_args, "--node-name", "X")
    pod_dns = f"$(POD_NAME).{sts['serviceName']}"
    assert flag(k8s_args, "--node-name") == f"{pod_dns}:8080"
    names = [f"{statefulset['metadata']['name']}-{i}.{sts['serviceName']}:8080" for i in range(sts["replicas"])]
    assert flag(args, "--node-hosts").split(",") == [f"http://{n}" for n in names]
    services_k8s = {s["metadata"]["name"]: s for s in by_kind["Service"]}
    assert services_k8s[sts["serviceName"]]["spec"]["clusterIP"] == "None"
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"

    assert declared_limit(env) == enforced_limit(k8s_args)

    (redis,) = [d for d in by_kind["Deployment"] if d["metadata"]["name"] == "redis"]
    (redis_container,) = redis["spec"]["template"]["spec"]["containers"]
    assert redis_container["image"] == services["redis"]["image"]
    assert redis_container["args"] == services["redis"]["command"]
    assert "redis" in services_k8s and flag(k8s_args, "--redis-url") == "redis://redis:6379/0"


# --- the topology, as local processes ----------------------------------------------------------------------------

RUN = {  # a short headless run, set through the same variables as `HEADLESS=true ... docker compose up`
    "HEADLESS": "true",
    "RUN_TIME": "12s",
    "WORKERS": "2",
    "EXPECT_WORKERS_MAX_WAIT": "30",
    "METRICS_LINGER": "20",
    "STEADY_RPS": "60",
    "BURST_MULTIPLIER": "3",
    "BURST_EVERY": "5",
    "BURST_DURATION": "2",
    "STATS_INTERVAL": "2",
    # a limit between the two rates: steady traffic (60/s) passes, bursts (180/s for 2 s) empty the bucket
    "LIMIT_REQUESTS": "100",
    "LIMIT_BURST": "100",
}
# steady 0-5 s, burst 5-7 s, steady 7-10 s, burst 10-12 s: 8 s x 60/s + 4 s x 180/s
EXPECTED_REQUESTS = {"steady": 8 * 60, "burst": 4 * 180}
DASHBOARD_AT = 9.0  # seconds into the run: the rate windows then hold steady and burst traffic
DASHBOARD_INTERVALS = {"$__rate_interval": "5s", "$__interval": "1s", "$__range": "12s"}


def prometheus_binary():
    return need_command("prometheus", INSTALL_PROMETHEUS)


def summary_counts(output):
    """Per mode, the requests of the master's end-of-run table (mode x outcome rows)."""
    counts = {}
    for mode, _outcome, n in re.findall(r"^(steady|burst) +(allowed|limited|error) +(\d+) ", output, re.M):
        counts[mode] = counts.get(mode, 0) + int(n)
    return counts


@pytest.mark.integration
def test_compose_topology_as_local_processes_counts_agree_everywhere(tmp_path, redis_available):
    binary = prometheus_binary()
    started = time.monotonic()
    compose = load_compose(RUN)["services"]
    ports = {name: free_port() for name in LIMITERS}
    metrics_port, master_port = free_port(), free_port()
    # compose address -> local address, for every place one process names another
    local = {f"{name}:8080": f"127.0.0.1:{port}" for name, port in ports.items()}
    local["master:8089"] = f"127.0.0.1:{metrics_port}"

    with redis_server() as redis_url, running_nodes(compose, ports, local, redis_url):
        config = local_prometheus_config(local, interval="1s")
        with prometheus_server(config, tmp_path, binary) as prom:
            master, workers = start_locust(compose, local, metrics_port, master_port, tmp_path)
            with running(master), running(workers[0]), running(workers[1]):
                master.wait_for(r"waiting up to \S+ for a last scrape", timeout=60)
                assert master.wait(30) == 0, master.output[-4000:]
                for worker in workers:
                    assert worker.wait(15) == 0, worker.output[-4000:]
            # the master exited after Prometheus' last scrape; once a scrape has failed, that one is stored
            up = prom.wait_until('up{job="rlsuite"}', lambda v: v == 0, timeout=10)
            assert up == 0, "Prometheus never noticed the master had gone"
            out = master.output

            # 1. requests per mode: Prometheus == the master's own summary == Locust's JSON == the schedule
            in_prometheus = prom.values("sum by (mode) (last_over_time(rlsuite_requests_total[5m]))", by="mode")
            in_summary = summary_counts(out)
            locust_json = sum(e["num_requests"] for e in json.loads((tmp_path / "stats.json").read_text()))
            assert in_prometheus == {m: float(n) for m, n in in_summary.items()}, (in_prometheus, in_summary)
            assert sum(in_summary.values()) == locust_json, (in_summary, locust_json)
            assert f"Locust counted {locust_json} requests; the suite counted {locust_json}." in out
            assert in_summary == EXPECTED_REQUESTS  # every slot of the schedule, sent by two workers

            # 2. admitted: the suite's allowed == the limiters' admitted in Prometheus == the nodes' own /metrics
            allowed = prom.scalar('sum(last_over_time(rlsuite_requests_total{outcome="allowed"}[5m]))')
            own = sum(node_admitted(port) for port in ports.values())
            admitted = prom.wait_until(
                'sum(demolimiter_requests_total{decision="admitted"})', lambda v: v == own, timeout=10
            )
            assert allowed == admitted == own, {"suite": allowed, "prometheus": admitted, "nodes": own}
            limited = prom.scalar('sum(last_over_time(rlsuite_requests_total{outcome="limited"}[5m]))')
            assert limited > 0, "bursts of 180/s for 2 s should exceed a bucket of 100 + 100/s"
            # the limit compose declares to the suite is the one the nodes enforce: the verdict passes
            assert "Verdict: PASS" in out, out[-4000:]
            assert prom.scalar('last_over_time(rlsuite_verdict{result="pass"}[5m])') == 1

            # 3. every query of the Grafana dashboard returns data, evaluated during the run
            t0 = prom.scalar("max(last_over_time(rlsuite_run_start_timestamp_seconds[5m]))")
            assert t0, "no run start in Prometheus"
            empty = []
            for expr in dashboard_exprs(json.loads(DASHBOARD.read_text())):
                concrete = expr
                for variable, value in DASHBOARD_INTERVALS.items():
                    concrete = concrete.replace(variable, value)
                result = prom.query(concrete, at=t0 + DASHBOARD_AT)
                if not any(math.isfinite(float(s["value"][1])) for s in result):
                    empty.append((concrete, result))
            assert not empty, empty

    # no worker lost on the way, nothing crashed
    assert "missing" not in out, out
    assert "Traceback" not in out and not any("Traceback" in w.output for w in workers)
    assert time.monotonic() - started < 60, "the topology test should stay well under a minute"


def node_admitted(port):
    samples = scrape(f"http://127.0.0.1:{port}/metrics", "demolimiter_requests_total")
    return sum(s.value for s in samples if s.labels["decision"] == "admitted")


@contextmanager
def running_nodes(compose, ports, local, redis_url):
    """The limiter services of compose as `python -m demolimiter node` processes, with compose's flags; only the
    addresses change (listen on 127.0.0.1:<free port>, named by that address, the local redis)."""
    with ExitStack() as stack:
        for name, port in ports.items():
            args = command(compose[name])[3:]  # drop "python -m demolimiter", keep "node ..."
            args = with_flag(args, "--host", "127.0.0.1")
            args = with_flag(args, "--port", str(port))
            args = with_flag(args, "--node-name", local[flag(args, "--node-name")])
            args = with_flag(args, "--redis-url", redis_url)
            stack.enter_context(limiter_node(args))
        yield


def start_locust(compose, local, metrics_port, master_port, tmp_path):
    """Compose's master and two workers; only addresses are rewritten, the settings come from compose's env."""
    master_service = compose["master"]
    args = list(master_service["command"])
    hosts = flag(args, "--node-hosts").split(",")
    args = with_flag(args, "--node-hosts", ",".join("http://" + local[h.removeprefix("http://")] for h in hosts))
    args[args.index("-f") + 1] = str(LOCUSTFILE)
    env = {k: str(v) for k, v in master_service["environment"].items()}
    assert env["LOCUST_HEADLESS"] == "true" and env["LOCUST_EXPECT_WORKERS"] == "2"
    del env["LOCUST_METRICS_PORT"]  # compose's 8089 is the container's port; here a free one
    master = Proc(
        [
            *LOCUST,
            *args,
            "--master-bind-host",
            "127.0.0.1",
            "--master-bind-port",
            str(master_port),
            "--web-host",
            "127.0.0.1",
            "--metrics-port",
            str(metrics_port),
            "--json-file",
            str(tmp_path / "stats"),
        ],
        env=env,
    )
    workers = []
    for _ in range(int(env["LOCUST_EXPECT_WORKERS"])):
        worker_args = with_flag(list(compose["worker"]["command"]), "--master-host", "127.0.0.1")
        worker_args[worker_args.index("-f") + 1] = str(LOCUSTFILE)
        worker_env = {k: str(v) for k, v in compose["worker"].get("environment", {}).items()}
        workers.append(Proc([*LOCUST, *worker_args, "--master-port", str(master_port)], env=worker_env))
    return master, workers


def test_helpers_resolve_compose_variables_like_compose():
    text = "a: ${X:-1} b: ${Y-2} c: ${Z:-} d: $$HOME"
    assert interpolate(text, {}) == "a: 1 b: 2 c:  d: $HOME"
    assert interpolate(text, {"X": "", "Y": "", "Z": "z"}) == "a: 1 b:  c: z d: $HOME"
    assert compose_defaults("${A:-1} ${A:-1} ${B}") == {"A": "1", "B": ""}
    assert image_tag("localhost:5000/rlsuite:0.1.0") == "0.1.0" and image_tag("localhost:5000/rlsuite") is None
