"""Load-test suite for HTTP rate-limiter clusters, built on Locust.

Modules, one concept each: ``schedule`` (steady/burst stages as a function of time), ``targets`` (limiter nodes
and what their answers mean), ``plan`` (what the master tells every process about a run), ``pacing`` (open-model
send times), ``tally`` (per-request counting and its worker-to-master deltas), ``metrics`` (Prometheus view),
``exporter`` (serving /metrics), ``console`` (periodic line and end-of-run summary), ``users`` (the Locust user),
``suite`` (wiring it all into a Locust environment).
"""
