"""An asyncio + httpx load generator, the usual way to write one in Python: as fast as it can, for a fixed time.

asyncio.Semaphore(100) bounds the requests in flight, one httpx.AsyncClient with 100 connections sends them,
round-robin over the nodes. Prints one JSON line: requests completed in the measured window (after a warm-up)
and requests/s. Bench use only; needs httpx (pip install httpx).

    python bench/httpx_generator.py --urls http://127.0.0.1:8081,http://127.0.0.1:8082 --duration 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import httpx


async def generate(urls: list[str], duration: float, warmup: float, concurrency: int) -> dict[str, float]:
    sem = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    counted = errors = 0
    start = time.monotonic()
    measure_from, end = start + warmup, start + warmup + duration

    async with httpx.AsyncClient(limits=limits, timeout=2.0) as client:

        async def one(url: str) -> None:
            nonlocal counted, errors
            try:
                response = await client.get(url)
                ok = response.status_code == 200
            except httpx.HTTPError:
                ok = False
            finally:
                sem.release()
            if measure_from <= time.monotonic() < end:
                if ok:
                    counted += 1
                else:
                    errors += 1

        tasks: set[asyncio.Task[None]] = set()
        i = 0
        while time.monotonic() < end:
            await sem.acquire()
            task = asyncio.create_task(one(urls[i % len(urls)]))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            i += 1
        if tasks:
            await asyncio.wait(tasks, timeout=5)
    return {"requests": counted, "errors": errors, "seconds": duration, "rps": counted / duration}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--urls", required=True, help="comma-separated URLs, requested round-robin")
    p.add_argument("--duration", type=float, default=5.0, help="measured seconds (default 5)")
    p.add_argument("--warmup", type=float, default=1.0, help="seconds sent before measuring (default 1)")
    p.add_argument("--concurrency", type=int, default=100, help="requests in flight and connections (default 100)")
    ns = p.parse_args()
    urls = [u.strip() for u in ns.urls.split(",") if u.strip()]
    print(json.dumps(asyncio.run(generate(urls, ns.duration, ns.warmup, ns.concurrency))), flush=True)


if __name__ == "__main__":
    main()
