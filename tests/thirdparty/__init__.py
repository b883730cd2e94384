"""Rate limiters the team did not write, served over HTTP on 127.0.0.1 so the suite's verdict can be tested on them.

``limits_app``: the `limits` library (PyPI ``limits==5.8.0``) behind a minimal HTTP/1.1 server, one process per node;
``harness``: starts N of them (on one redis-server, or each with its own memory) and stops them by PID.
"""
