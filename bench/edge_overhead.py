"""What the nginx edge costs: the same load sent straight to a backend and through nginx.

One sandbox with one simulated backend, so the only difference between the two paths is nginx.
Prints median and P99 latency and time to first token for one client (the bare cost of the
extra hop), for one client's 32-token streams (what nginx adds before the first token), and
for 50 and 200 concurrent streaming clients, and requests/s at saturation (one-token answers),
each as a ratio against direct.
Goals: nginx adds at most 1 ms to the median latency, and under 5 ms to a stream's first token
(a bound the test suite held once; on a busy machine it is noise, so it is measured here).

    .venv/bin/python bench/edge_overhead.py [--requests N]
"""

from __future__ import annotations

import argparse

from common import compare, pooled, ratio, sandbox, say

from llmfleet.local.loadgen import LoadReport, LoadSpec, run_load_sync


def measure(url: str, concurrency: int, requests: int, **spec) -> LoadReport:
    return run_load_sync(LoadSpec(url=url, concurrency=concurrency, requests=requests,
                                  max_duration_s=300, **spec))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=600, help="requests per measurement")
    args = parser.parse_args()

    backend_settings = {"backends": 1, "max_num_seqs": 256, "preset": "l4"}
    with sandbox(sandbox=backend_settings) as box:
        direct, edge = box["backends"][0]["url"], box["endpoint"]
        # One short warm-up per path so connection set-up is not measured.
        for url in (direct, edge):
            measure(url, 10, 20, output_tokens="fixed:8")
        say("1 client, alternating paths: the per-request cost of the extra hop")
        single: dict[str, list[LoadReport]] = {"direct": [], "edge": []}
        for _ in range(4):
            for name, url in (("direct", direct), ("edge", edge)):
                single[name].append(measure(url, 1, 50, output_tokens="fixed:4",
                                            prompt_tokens="fixed:16"))
        print(compare("\n1 client at a time, 4 tokens each (200 requests per path)",
                      "direct", pooled(single["direct"]), "nginx", pooled(single["edge"])))
        say("1 client, 32-token streams, alternating paths: the first token's added wait")
        streams: dict[str, list[LoadReport]] = {"direct": [], "edge": []}
        for _ in range(2):
            for name, url in (("direct", direct), ("edge", edge)):
                streams[name].append(measure(url, 1, 10, output_tokens="fixed:32",
                                             prompt_tokens="fixed:64"))
        direct_streams, edge_streams = pooled(streams["direct"]), pooled(streams["edge"])
        print(compare("\n1 client at a time, 32-token streams (20 requests per path)",
                      "direct", direct_streams, "nginx", edge_streams))
        added_ms = (edge_streams.ttft_p50_s - direct_streams.ttft_p50_s) * 1000
        print(f"  first token added by nginx: {added_ms:.2f} ms at the median "
              f"({'within' if added_ms < 5 else 'OVER'} the 5 ms goal)")
        for concurrency in (50, 200):
            runs: dict[str, list[LoadReport]] = {"direct": [], "edge": []}
            # Alternate the paths so a drift in machine load hits both alike.
            for _ in range(2):
                for name, url in (("direct", direct), ("edge", edge)):
                    say(f"{concurrency} clients, {name}")
                    runs[name].append(measure(url, concurrency, args.requests // 2,
                                              output_tokens="fixed:32", seed=concurrency))
            print(compare(f"\n{concurrency} concurrent streaming clients, 32 tokens each "
                          f"({args.requests} requests per path)",
                          "direct", pooled(runs["direct"]), "nginx", pooled(runs["edge"])))

        say("saturation: one-token answers, 64 clients, no streaming")
        rates = {}
        for name, url in (("direct", direct), ("edge", edge)):
            report = measure(url, 64, args.requests * 2, output_tokens="fixed:1",
                             prompt_tokens="fixed:8", stream=False)
            rates[name] = report.ok_requests_per_s
        print("\nrequests/s at saturation (1 output token, 64 clients, no streaming)")
        print(f"  direct {rates['direct']:9.1f}   nginx {rates['edge']:9.1f}   "
              f"ratio {ratio(rates['edge'], rates['direct'])}")


if __name__ == "__main__":
    main()
