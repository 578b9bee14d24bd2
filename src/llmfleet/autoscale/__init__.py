"""Autoscaling: the pure policy (`policy.decide`), shared by the sandbox, the simulator and the
AWS scaler."""
