"""The rate-limiter conformance catalogue: named cases, graded results, JUnit XML for CI.

    locust -f locustfiles/conformance.py --headless --node-hosts http://a:8080,http://b:8080 \
        --limit 100 --window 1 --limit-algorithm token-bucket --junit-xml conformance.xml

Every case runs back to back against the declared policy (the declaration options of locustfiles/ratelimit.py);
`--cases RLC-1,RLC-3.1` or `--cases -RLC-8` selects. Exit code 0: nothing FAILED; 3: a case FAILED; 4: a case could
not be run as designed; 2: bad input. The catalogue: docs/conformance.md. Nothing runs at import except option
registration.
"""

import locust

import sys
from pathlib import Path

# Locust puts this file's directory on sys.path, not the repository root where the suite's packages live.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rlsuite.conformance.runner import ConformanceShape, ConformanceUser, register

register(locust.events)

__all__ = ["ConformanceShape", "ConformanceUser"]
