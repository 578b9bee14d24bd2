"""Health probes for the sandbox's processes: HTTP, Redis, or a file that appears."""

from __future__ import annotations

import http.client
import socket
from pathlib import Path
from urllib.parse import urlsplit


def answers(url: str, timeout_s: float = 1.0) -> bool:
    """True when `url` answers 2xx within the timeout; redis://: answers PING; file://: the
    file exists (what a service without a port writes once it has done its first work)."""
    parts = urlsplit(url)
    if parts.scheme == "redis":
        return redis_answers(parts.hostname or "127.0.0.1", parts.port or 0, timeout_s)
    if parts.scheme == "file":
        return Path(parts.path).exists()
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout_s)
    try:
        connection.request("GET", parts.path or "/")
        return 200 <= connection.getresponse().status < 300
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()


def redis_answers(host: str, port: int, timeout_s: float) -> bool:
    """True when a Redis server answers PING. Without the password it answers -NOAUTH: that
    still shows it is up and serving, which is all a health check needs to know."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as connection:
            connection.sendall(b"PING\r\n")
            reply = connection.recv(64)
    except OSError:
        return False
    return reply.startswith((b"+PONG", b"-NOAUTH"))
