"""Health probes: a plain HTTP GET with a short timeout."""

from __future__ import annotations

import http.client
from urllib.parse import urlsplit


def http_ok(url: str, timeout_s: float = 1.0) -> bool:
    """True when `url` answers 2xx within the timeout."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout_s)
    try:
        connection.request("GET", parts.path or "/")
        return 200 <= connection.getresponse().status < 300
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()
