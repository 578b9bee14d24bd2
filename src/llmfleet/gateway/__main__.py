"""`python -m llmfleet.gateway`: serve nginx's auth_request on loopback."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import resource
import signal
import sys
from pathlib import Path

import redis.asyncio as aioredis
import uvloop
from redis.exceptions import RedisError

from llmfleet.config import ConfigError, FleetConfig, load_config
from llmfleet.gateway.admission import Admission, ReadyNodes
from llmfleet.gateway.http import HttpConnection, close_idle
from llmfleet.gateway.leases import LeaseListener, lease_ttl_s
from llmfleet.gateway.server import Gateway, routes

log = logging.getLogger("llmfleet.gateway")

# listen() quietly caps the backlog at net.core.somaxconn, so asking for the most a host
# allows means raising that sysctl is all a bigger edge needs.
MAX_BACKLOG = 65535


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m llmfleet.gateway", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True,
                        help="TCP port: /auth, /metrics and /health")
    parser.add_argument("--backlog", type=int, default=MAX_BACKLOG,
                        help="connections waiting to be accepted (the kernel caps it at "
                             "net.core.somaxconn)")
    parser.add_argument("--config", type=Path, help="llmfleet config (YAML or JSON)")
    parser.add_argument("--redis-url", required=True, help="redis://HOST:PORT/DB")
    parser.add_argument("--redis-password-file", type=Path,
                        help="file holding the Redis password (kept off the command line)")
    parser.add_argument("--lease-port", type=int, default=0,
                        help="loopback UDP port for nginx's syslog lines that end leases")
    parser.add_argument("--lease-ttl", type=float, default=None,
                        help="seconds after which an unreleased in-flight slot frees itself "
                             "(default: the config's read timeout and a margin)")
    parser.add_argument("--members-state", type=Path, default=None,
                        help="the sync agent's state file: which nodes are ready, for the "
                             "edge's queue (with load_balancing.max_requests_per_node)")
    return parser.parse_args(argv)


def raise_open_files_limit() -> int:
    """Every request in a burst holds one connection from nginx until it is decided; the
    usual soft limit (1024) would make accept() fail long before the backlog fills."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        wanted = 1 << 20 if hard == resource.RLIM_INFINITY else hard
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


async def serve(args: argparse.Namespace) -> None:
    config = load_config(args.config).config
    limits = config.rate_limits
    password = args.redis_password_file.read_text().strip() if args.redis_password_file else None
    timeout = limits.redis_timeout_ms / 1000
    client = aioredis.from_url(args.redis_url, password=password, socket_timeout=timeout,
                               socket_connect_timeout=timeout, decode_responses=False)
    lease_ttl = args.lease_ttl or lease_ttl_s(config.load_balancing.read_timeout_s)
    admission = edge_queue(config, args.members_state, lease_ttl)
    gateway = Gateway(limits, client, lease_ttl, admission)
    handler = routes(gateway)
    connections: set[HttpConnection] = set()
    loop = asyncio.get_running_loop()
    open_files = raise_open_files_limit()
    await load_every_key(gateway)
    server = await loop.create_server(lambda: HttpConnection(handler, connections),
                                      args.host, args.port, backlog=args.backlog)
    if args.lease_port:
        await loop.create_datagram_endpoint(lambda: LeaseListener(gateway.release),
                                            local_addr=(args.host, args.lease_port))
    background = [asyncio.create_task(gateway.follow_changes()),
                  asyncio.create_task(gateway.resync_every()),
                  asyncio.create_task(close_idle(connections))]
    if admission is not None:
        # Places come back when nginx logs a request's end (the lease port), or when they expire.
        background.append(asyncio.create_task(admission.keep_moving()))
    log.info("gateway for %s on http://%s:%d (tiers: %s; backlog %d, open files %d)",
             config.stack_name, args.host, args.port, ", ".join(limits.tiers), args.backlog,
             open_files)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # The ~40,000 objects of the modules loaded so far, and the key records (about one object
    # a key), live as long as the process; frozen, the garbage collector's full passes stop
    # scanning them. Each pass paused every decision for about 30 ms, and a burst of
    # connections set off one or two; 100,000 key records would make each pass longer.
    gc.freeze()
    await stop.wait()
    server.close()
    for connection in list(connections):
        if connection.transport:
            connection.transport.close()
    for task in background:
        task.cancel()
    await asyncio.gather(*background, return_exceptions=True)
    await client.aclose()


def edge_queue(config: FleetConfig, members_state: Path | None,
               lease_ttl: float) -> Admission | None:
    """The edge's queue for a place on the fleet, when nodes have a cap and the sync agent's
    state says which are ready; else None (nginx's own cap answers busy at once)."""
    lb = config.load_balancing
    if lb.max_requests_per_node is None or members_state is None:
        return None
    return Admission(ReadyNodes(members_state).count, lb.max_requests_per_node, lb.queue_depth,
                     lb.queue_timeout_s, lease_ttl, lb.busy_retry_after_s)


async def load_every_key(gateway: Gateway) -> None:
    """Every key record before the first decision, so that an outage of Redis right after a
    start still finds each valid key known. Without Redis the gateway starts anyway, knowing
    no key, and loads them all once Redis answers."""
    try:
        await gateway.load_keys()
    except (RedisError, OSError) as error:
        log.error("could not load the key records from Redis (%s); serving, and loading them "
                  "once Redis answers", type(error).__name__)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    args = parse_args(argv)
    try:
        # uvloop roughly halves the event loop's share of each decision; the gateway sits in
        # front of every request, so its latency is the edge's latency.
        uvloop.run(serve(args))
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 2
    except OSError as error:
        print(f"gateway: cannot listen on {args.host}:{args.port}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
