#!/usr/bin/python3
"""Time spent in oneDNN per step and rank, by primitive, from oneDNN's own clock.

Runs a benchmark twice under ONEDNN_VERBOSE=1, with --steps A and B (the
`{steps}` in the command), and divides the difference by (B - A) x ranks, so
start-up and warm-up (JIT compilation, first-touch faults) cancel. oneDNN
times each primitive it executes; this groups them into the linear layers'
products (2-D matmul), attention's batched products, and the rest by kind
(eltwise is GELU under autocast). Works for any program on Debian's LibTorch
1.13, which runs bf16 products and bf16 GELU through oneDNN:

    python3 bench/onednn_time.py --ranks 2 -- mpirun -np 2 build/bench/vlm-dp-bench \\
        --precision bf16 --overlap on --warmup 2 --steps {steps}
    python3 bench/onednn_time.py --ranks 2 -- /usr/bin/python3 bench/ddp_reference.py \\
        --ranks 2 --precision bf16 --warmup 2 --steps {steps}

It also prints oneDNN's version and ISA line and each group's kernels
(`brg:avx512_core_bf16`; where oneDNN uses AMX, the ISA line ends "and Intel
AMX with bfloat16 ... support" and the products' kernel is
`brg:avx512_core_amx_bf16`, names read from libdnnl 2.6.3). Verbose mode
costs time outside the primitives: read the step time from a run without it.
"""
import argparse
import collections
import os
import subprocess
import sys


def tally(output):
    """(milliseconds, FLOPs, calls, implementations) per group from oneDNN's
    verbose lines, and oneDNN's own lines about itself (version, ISA)."""
    ms, flops, calls = collections.Counter(), collections.Counter(), collections.Counter()
    implementations, about = collections.defaultdict(set), []
    for line in output.splitlines():
        if line.startswith("onednn_verbose,info,") and ("oneDNN v" in line or ",isa:" in line):
            if line not in about:
                about.append(line)
        if not line.startswith("onednn_verbose,exec,"):
            continue
        fields = line.split(",")
        kind, problem, took = fields[3], fields[-2], float(fields[-1])
        if kind == "matmul":  # problem: AxB:BxC:AxC, leading batch sizes on each
            a, b = [[int(v) for v in part.split("x")] for part in problem.split(":")[:2]]
            batch = 1
            for size in a[:-2]:
                batch *= size
            group = "attention's batched products" if len(a) > 2 else "linear layers' products"
            flops[group] += 2 * batch * a[-2] * a[-1] * b[-1]
        else:
            group = f"{kind} ({fields[4]})"
        ms[group] += took
        calls[group] += 1
        implementations[group].add(fields[4])
    return ms, flops, calls, implementations, about


def run(command, steps):
    env = dict(os.environ, ONEDNN_VERBOSE="1", DNNL_VERBOSE="1")
    argv = [part.replace("{steps}", str(steps)) for part in command]
    done = subprocess.run(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if done.returncode != 0:
        sys.exit(f"onednn_time.py: {' '.join(argv)} exited with {done.returncode}:\n{done.stdout[-2000:]}")
    if "onednn_verbose,exec," not in done.stdout:
        sys.exit("onednn_time.py: no oneDNN primitive ran (is this LibTorch built with oneDNN, and the precision bf16?)")
    return tally(done.stdout)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ranks", type=int, default=1, help="processes whose lines the output holds")
    parser.add_argument("--steps", type=int, nargs=2, default=[2, 8], metavar=("A", "B"))
    parser.add_argument("command", nargs="+", help="the benchmark, with {steps} where its step count goes")
    args = parser.parse_args()
    if not any("{steps}" in part for part in args.command):
        parser.error("the command needs {steps} where its step count goes")
    few, many = args.steps
    if many <= few:
        parser.error("--steps A B needs B > A")
    (ms_a, flops_a, calls_a, _, _), (ms_b, flops_b, calls_b, implementations, about) = \
        run(args.command, few), run(args.command, many)
    # The ISA line says whether oneDNN uses AMX.
    for line in about:
        print(line.split(",")[-1])
    per = (many - few) * args.ranks
    print(f"{'oneDNN, per step and rank':34s} {'calls':>6s} {'ms':>8s} {'GFLOP/s':>8s}")
    total = 0.0
    for group in sorted(ms_b, key=lambda g: ms_a[g] - ms_b[g]):
        took = (ms_b[group] - ms_a[group]) / per
        rate = (flops_b[group] - flops_a[group]) / per / (took * 1e-3) / 1e9 if flops_b[group] else 0.0
        total += took
        calls = (calls_b[group] - calls_a[group]) / per
        print(f"{group:34s} {calls:6.1f} {took:8.2f}" + (f" {rate:8.1f}" if rate else ""))
    print(f"{'all':34s} {'':6s} {total:8.2f}")
    print("oneDNN's kernels:")
    for group in sorted(implementations):
        print(f"  {group}: {', '.join(sorted(implementations[group]))}")


if __name__ == "__main__":
    main()
