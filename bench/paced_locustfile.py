"""A plain FastHttpUser paced by Locust's own ``constant_throughput``: the baseline for CPU per request at a fixed
rate (bench/overload.py). Each user sends ``BENCH_USER_RPS`` requests/s (default 40: 100 users make 4,000/s)."""

from locust import FastHttpUser, constant_throughput, task

import os


class PacedUser(FastHttpUser):
    wait_time = constant_throughput(float(os.environ.get("BENCH_USER_RPS", "40")))

    @task
    def index(self) -> None:
        self.client.get("/")
