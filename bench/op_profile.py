#!/usr/bin/python3
"""Where a step's time goes, by operator: sums a Chrome trace written by
`vlm-dp-bench --profile FILE` (LibTorch's operator profiler) into self time
per operator name (the time not spent in operators it called), largest first.

    python3 bench/op_profile.py trace.json [--top 25]

The profiler's own cost per call swells what it measures: it put GELU at 14%
of a bf16 step that oneDNN's clock puts at 8%. For the time in oneDNN's
primitives (bf16 products, GELU), bench/onednn_time.py reads oneDNN's clock;
for shares of CPU time without per-call overhead, bench/perf_ops.py samples.
"""
import argparse
import collections
import json


def self_times(events):
    """Self time per name: an event's duration less that of the events nested in it (same thread)."""
    by_thread = collections.defaultdict(list)
    for e in events:
        if e.get("ph") == "X":
            by_thread[e.get("tid")].append(e)
    totals = collections.Counter()
    calls = collections.Counter()
    for spans in by_thread.values():
        spans.sort(key=lambda e: (e["ts"], -e["dur"]))
        stack = []  # [end, name, child time]
        def close(until):
            while stack and stack[-1][0] <= until:
                end, name, child = stack.pop()
                totals[name] -= child
        for e in spans:
            close(e["ts"])
            if stack:
                stack[-1][2] += e["dur"]
            totals[e["name"]] += e["dur"]
            calls[e["name"]] += 1
            stack.append([e["ts"] + e["dur"], e["name"], 0.0])
        close(float("inf"))
    return totals, calls


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("trace")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    with open(args.trace) as f:
        trace = json.load(f)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    totals, calls = self_times(events)
    whole = sum(totals.values())
    print(f"{'self ms':>10} {'share':>7} {'calls':>7}  operator")
    for name, us in totals.most_common(args.top):
        print(f"{us / 1e3:10.1f} {100 * us / whole:6.1f}% {calls[name]:7d}  {name}")
    print(f"{whole / 1e3:10.1f} 100.0%          all operators")


if __name__ == "__main__":
    main()
