"""What runs on the user's own machine and never ships to a deployed stack: the sandbox, the
simulated vLLM backend, the load generator, the live `top` view, the dashboard generator and
the cost estimate.

Everything else under `llmfleet` is the runtime the AWS edge and monitor install; it never
imports this package (tests/unit/test_layers.py holds that).
"""
