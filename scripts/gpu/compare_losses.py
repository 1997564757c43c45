"""Checks training losses from vlm-train's metrics.jsonl (one JSON object per
logged step, with "step" and "loss"): every loss finite, the last below the
first; given a second file, its first N losses equal the first file's within a
relative tolerance, step by step. Exits non-zero, saying why, otherwise.

    python3 scripts/gpu/compare_losses.py A.jsonl [B.jsonl --rtol 1e-3 --steps 3 --names CPU CUDA]
"""
import argparse
import json
import math
import sys


def losses(path):
    found = {}
    with open(path) as f:
        for line in f:
            record = json.loads(line)
            if "step" in record and "loss" in record:
                found[int(record["step"])] = float(record["loss"])
    if len(found) < 2:
        sys.exit(f"compare_losses: {path} holds {len(found)} step(s) with a loss; 2 or more needed")
    return found


def check_learning(name, run):
    steps = sorted(run)
    bad = [s for s in steps if not math.isfinite(run[s])]
    if bad:
        sys.exit(f"compare_losses: {name}: loss not finite at steps {bad[:10]}")
    first, last = run[steps[0]], run[steps[-1]]
    print(f"{name}: {len(steps)} steps, loss {first:.6f} at step {steps[0]} -> {last:.6f} at step {steps[-1]}")
    if not last < first:
        sys.exit(f"compare_losses: {name}: the last loss ({last}) is not below the first ({first})")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("a")
    parser.add_argument("b", nargs="?")
    parser.add_argument("--rtol", type=float, default=1e-3)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--names", nargs=2, default=["A", "B"])
    args = parser.parse_args()
    a = losses(args.a)
    check_learning(args.names[0], a)
    if args.b is None:
        return
    b = losses(args.b)
    check_learning(args.names[1], b)
    common = sorted(set(a) & set(b))[: args.steps]
    if len(common) < args.steps:
        sys.exit(f"compare_losses: only {len(common)} common steps, {args.steps} needed")
    print(f"{'step':>6} {args.names[0]:>14} {args.names[1]:>14} {'rel. diff':>10}  (tolerance {args.rtol:g})")
    worst = 0.0
    for s in common:
        rel = abs(a[s] - b[s]) / max(abs(a[s]), 1e-12)
        worst = max(worst, rel)
        print(f"{s:>6} {a[s]:>14.7f} {b[s]:>14.7f} {rel:>10.2e}")
    if worst > args.rtol:
        sys.exit(f"compare_losses: {args.names[1]} differs from {args.names[0]} by {worst:.2e} (relative) "
                 f"in the first {args.steps} steps; tolerance {args.rtol:g}")
    print(f"{args.names[1]} equals {args.names[0]} within {args.rtol:g} over the first {args.steps} steps")


if __name__ == "__main__":
    main()
