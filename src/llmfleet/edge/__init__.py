"""The edge: nginx in front of the GPU fleet, rendered from the config."""
