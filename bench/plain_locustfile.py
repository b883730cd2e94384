"""The baseline for the bench: a plain FastHttpUser, no pacing, no listener; as fast as Locust goes."""

from locust import FastHttpUser, constant, task


class PlainUser(FastHttpUser):
    wait_time = constant(0)

    @task
    def index(self) -> None:
        self.client.get("/")
