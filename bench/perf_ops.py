#!/usr/bin/python3
"""Where a step's CPU time goes, by LibTorch operator, from perf's call stacks.

Runs a command under `perf record --call-graph dwarf` (every process it
starts, so every rank under mpirun) and keeps each process's last --last
seconds, the steady state. Each sample goes to the innermost LibTorch
operator (at::_ops::<op>) on its stack, and to the innermost vlmtrain
function (vlm::...) or autograd node (<Op>Backward0) as the caller; a sample
whose innermost frame is generated code ([JIT]: oneDNN's kernels, the
products and bf16 GELU on Debian's LibTorch) counts as JIT. Works for the
PyTorch reference too (callers are then Python's):

    python3 bench/perf_ops.py -- mpirun -np 2 build/bench/vlm-dp-bench --precision bf16 \\
        --overlap on --warmup 2 --steps 40

Unlike LibTorch's profiler, this does not time each operator, so small
operators are not inflated by the profiler's own overhead; unlike
bench/onednn_time.py, it sees the work outside oneDNN. Shares are of the
process's samples: every thread (the communication thread, the loader) is in
them. Needs perf (Debian's linux-perf) and a kernel that lets it sample.
"""
import argparse
import collections
import os
import re
import subprocess
import sys
import tempfile

OPERATOR = re.compile(r"at::_ops::(\w+)::(?:call|redispatch)")
CALLER = re.compile(r"\b(vlm::[\w:]+)|torch::autograd::generated::(\w+)::apply|torch::autograd::(AccumulateGrad)")
LAUNCHERS = {"mpirun", "orterun", "prterun", "orted", "prted", "perf", "perf-exec", "bash", "sh", "timeout"}


def samples(script_output):
    """(command, pid, time, [(symbol, dso) from the innermost frame out]) for each sample."""
    head, frames = None, []
    for line in script_output:
        if not line.strip():
            if head is not None:
                yield (*head, frames)
            head, frames = None, []
        elif not line[0].isspace():
            match = re.match(r"(.+?)\s+(\d+)\s+(\d+\.\d+):", line)
            head, frames = ((match.group(1).strip(), int(match.group(2)), float(match.group(3))) if match else None), []
        else:
            frame = re.match(r"\s*[0-9a-f]+\s+(.*?)\s+\((.*)\)\s*$", line)
            if frame:
                frames.append((frame.group(1), frame.group(2)))
    if head is not None:
        yield (*head, frames)


def where(frames):
    """(what the sample was doing, its nearest vlmtrain caller)."""
    dso = frames[0][1]
    operator = caller = None
    for sym, _ in frames:
        if operator is None:
            match = OPERATOR.search(sym)
            operator = match and match.group(1)
        if caller is None:
            match = CALLER.search(sym)
            caller = match and (match.group(1) or match.group(2) or match.group(3))
    if "JIT" in dso or dso.startswith("/tmp/perf-"):
        return "JIT (oneDNN's generated kernels)", caller
    if operator:
        return operator, caller
    if caller:
        return "outside operators", caller
    return f"outside operators ({os.path.basename(dso)})", caller


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--last", type=float, default=10.0, help="seconds at the end of each process to keep")
    parser.add_argument("--comm", help="the processes to report, by name (default: the most sampled one)")
    parser.add_argument("--top", type=int, default=25, help="rows of operator and caller")
    parser.add_argument("--frequency", type=int, default=499, help="samples per second and thread")
    parser.add_argument("command", nargs="+", help="the benchmark to run")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="perf_ops.") as tmp:
        data = os.path.join(tmp, "perf.data")
        record = ["perf", "record", "-q", "-F", str(args.frequency), "--call-graph", "dwarf,16384", "-o", data, "--"]
        try:
            done = subprocess.run(record + args.command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        except FileNotFoundError:
            sys.exit("perf_ops.py: perf is missing: install Debian's linux-perf (scripts/install-deps.sh does)")
        if done.returncode != 0 or not os.path.exists(data):
            sys.exit(f"perf_ops.py: perf record {' '.join(args.command)} exited with {done.returncode}:\n"
                     f"{done.stdout[-2000:]}")
        script = subprocess.Popen(["perf", "script", "-i", data, "-F", "comm,pid,time,ip,sym,dso"],
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, errors="replace")
        by_process = collections.defaultdict(list)
        for comm, pid, time, frames in samples(script.stdout):
            if frames:
                by_process[(comm, pid)].append((time, frames))
        script.wait()

    names = collections.Counter()
    for (comm, _), kept in by_process.items():
        if comm not in LAUNCHERS:
            names[comm] += len(kept)
    if not names:
        sys.exit("perf_ops.py: perf recorded no samples with call stacks (is perf allowed to sample here?)")
    comm = args.comm or names.most_common(1)[0][0]
    # A fork that has not exec'd yet (MPI's singleton start-up) carries its parent's name: leave out stubs.
    busiest = max(len(kept) for (name, _), kept in by_process.items() if name == comm)
    pair, processes = collections.Counter(), 0  # samples by (what, caller)
    for (name, _), kept in by_process.items():
        if name != comm or len(kept) < busiest / 10:
            continue
        processes += 1
        end = max(time for time, _ in kept)
        pair.update(where(frames) for time, frames in kept if time > end - args.last)
    what = collections.Counter()
    for (doing, _), count in pair.items():
        what[doing] += count
    total = sum(pair.values())
    if total == 0:
        sys.exit(f"perf_ops.py: no samples from {comm!r}; the processes sampled were {sorted(names)}")
    print(f"perf_ops: {comm}, {processes} process(es), last {args.last:g} s of each: {total} samples")
    print(f"{'share':>6s}  what")
    for doing, count in what.most_common():
        if count / total >= 0.002:
            print(f"{100 * count / total:5.1f}%  {doing}")
    print(f"\n{'share':>6s}  operator <- nearest vlmtrain caller (top {args.top}, JIT left out)")
    rows = [(key, count) for key, count in pair.most_common() if not key[0].startswith("JIT")]
    for (doing, caller), count in rows[:args.top]:
        print(f"{100 * count / total:5.1f}%  {doing} <- {caller or '-'}")


if __name__ == "__main__":
    main()
