"""The rate-limiter conformance catalogue: named cases, each quoting the requirement it checks, graded like
Autobahn|Testsuite (OK, NON-STRICT, INFORMATIONAL, NOT APPLICABLE, FAILED, INCONCLUSIVE), reported as a table, JUnit
XML, JSON, Prometheus gauges and HTML. ``locust -f locustfiles/conformance.py`` runs it.

One module per concept: ``cases`` (the catalogue: traffic and grading of each case), ``traffic`` (shots, phases,
records), ``evidence`` (what records prove: the replay, the exact models, whether a case ran as designed), ``fields``
(the rate-limit header generations), ``grading`` (grades, exit codes, ``--cases``), ``reports`` (table, JUnit, JSON,
metrics), ``html`` (the report section and web page), ``runner`` (Locust: options, dispatcher, user, conductor,
shape).
"""
