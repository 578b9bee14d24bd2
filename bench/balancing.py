"""least_conn against round_robin on heavy-tailed output lengths, same seeded load, one run.

Two simulated backends with few sequence slots, so requests queue and the balancer decides
how long each waits behind long generations. Prints median and P99 latency and time to first
token for round_robin (the baseline) and least_conn, with least_conn's ratio to it.

    .venv/bin/python bench/balancing.py [--requests N] [--repeats R]
"""

from __future__ import annotations

import argparse

from common import compare, pooled, sandbox, say

from llmfleet.local.loadgen import LoadReport, LoadSpec, run_load_sync

BACKENDS = {"time_scale": 0.03, "max_num_seqs": 2}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=800, help="requests per run")
    parser.add_argument("--repeats", type=int, default=2, help="runs per strategy, alternated")
    parser.add_argument("--concurrency", type=int, default=6)
    args = parser.parse_args()

    runs: dict[str, list[LoadReport]] = {"round_robin": [], "least_conn": []}
    for repeat in range(args.repeats):
        for strategy in runs:
            say(f"{strategy}, run {repeat + 1} of {args.repeats}")
            with sandbox(sandbox=BACKENDS, load_balancing={"strategy": strategy}) as box:
                runs[strategy].append(run_load_sync(LoadSpec(
                    url=box["endpoint"], requests=args.requests, concurrency=args.concurrency,
                    seed=repeat, output_tokens="heavy", max_duration_s=300)))
    print(compare(
        f"\nheavy-tailed output lengths, 2 backends x 2 slots, {args.concurrency} clients, "
        f"{args.requests * args.repeats} requests per strategy",
        "rr", pooled(runs["round_robin"]), "lc", pooled(runs["least_conn"])))


if __name__ == "__main__":
    main()
