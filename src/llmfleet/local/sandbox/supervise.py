"""`python -m llmfleet.local.sandbox.supervise --state-dir DIR`: the sandbox's supervisor
(`supervisor.py`), as `up` starts it. A module of its own, which the package does not import,
so that running it does not import it twice."""

import sys

from llmfleet.local.sandbox.supervisor import main

if __name__ == "__main__":
    sys.exit(main())
