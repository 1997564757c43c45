#!/usr/bin/env python3
"""Projected step time, exposed communication and scaling efficiency of DP x PP training, 8 to 4,096 GPUs.

An alpha-beta model, not a measurement: every figure it prints is computed
from the parameters below. Weak scaling: each data-parallel replica keeps its
batch, so ideal step time stays constant as GPUs are added.

  per stage, per step (1F1B, p stages, m micro-batches, t = seconds per sample):
    compute   = (m + p - 1) * (b / m) * t / p             the pipeline bubble included
    p2p       = 2 * (m + p - 1) * (alpha + (b / m) * a / B)   activations forward, gradients back
    allreduce = ring: 2 (n - 1) / n * S / B + 2 (n - 1) * alpha
                tree: 2 * S / B + 2 * log2(n) * alpha        (S = gradient bytes of one stage)
                auto: the faster of the two, as NCCL's tuner picks
    exposed   = max(allreduce - backward of the last micro-batch, last bucket)
                (--no-overlap: all of the allreduce, the pessimistic bound)
    step      = compute + p2p + exposed;  efficiency = (b * t / p) / step

B and alpha are NVLink's inside a node and InfiniBand's between nodes (a
stage's pipeline stays inside a node while p <= GPUs per node; every GPU has
its own NIC, as on DGX H100). Not modelled: tensor parallelism, the optimizer
step, stragglers, congestion and the collective library's own overheads.
Those only make the real figure lower. Read it as an upper bound.

    python3 bench/scaling_model.py                      # the bench model on H100s, 8..4,096 GPUs
    python3 bench/scaling_model.py --preset here ...    # this machine's shared memory, to check against vlm-dp-bench
"""
import argparse
import math

# Vendor data-sheet figures (docs/scaling.md cites them); latencies are assumptions of NCCL's order.
PRESETS = {
    # NVIDIA H100 SXM: NVLink 4 900 GB/s total = 450 GB/s each way; ConnectX-7 NDR InfiniBand 400 Gb/s per GPU.
    "h100": dict(intra_bw=450e9, intra_alpha=3e-6, inter_bw=50e9, inter_alpha=8e-6, gpus_per_node=8),
    # Horovod's 2017 benchmark: 4 Pascal GPUs per server (PCIe), RoCE 25 Gbit/s per server shared by its 4 GPUs.
    "horovod-p100": dict(intra_bw=10e9, intra_alpha=10e-6, inter_bw=25e9 / 8, inter_alpha=20e-6, gpus_per_node=4),
    # This machine: one node. Round figures from vlm-commbench in bench/RESULTS.md: busbw ~2 GB/s at
    # 64-256 MiB, and ~9 us for a 4 KiB allreduce (alpha rounded up to 10 us).
    "here": dict(intra_bw=2.0e9, intra_alpha=10e-6, inter_bw=2.0e9, inter_alpha=10e-6, gpus_per_node=1 << 30),
}


# Models to project. "bench" is configs/bench.pbtxt as measured here; "vlm-1b" is a
# 1.3B-parameter version of the same VLM (training FLOPs ~ 6 x parameters x 44
# tokens per sample), the size at which a 1,000-GPU job makes sense.
MODELS = {
    "bench": dict(params=7_536_407, flops_per_sample=1.056e9, grad_bytes=4, activation_bytes=44 * 256 * 2),
    "vlm-1b": dict(params=1.3e9, flops_per_sample=6 * 1.3e9 * 44, grad_bytes=2, activation_bytes=44 * 2048 * 2),
}


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", choices=PRESETS, default="h100")
    p.add_argument("--model", choices=MODELS, default="bench")
    p.add_argument("--params", type=float, default=None, help="unique parameters; overrides the model")
    p.add_argument("--grad-bytes", type=int, default=None, help="bytes per gradient element in the allreduce")
    p.add_argument("--flops-per-sample", type=float, default=None,
                   help="training FLOPs per sample (vlm-train-bench's train_flops_per_sample)")
    p.add_argument("--device-flops", type=float, default=989e12, help="peak FLOP/s of one GPU (H100 SXM bf16 dense)")
    p.add_argument("--mfu", type=float, default=0.4, help="fraction of the peak the compute reaches")
    p.add_argument("--sample-seconds", type=float, default=0,
                   help="measured compute seconds per sample; overrides the three above")
    p.add_argument("--batch", type=int, default=64, help="samples per data-parallel replica per step")
    p.add_argument("--micro-batches", type=int, default=8, help="per step, when pipelined")
    p.add_argument("--activation-bytes", type=float, default=None,
                   help="bytes per sample crossing a stage boundary (tokens x d_model x 2)")
    p.add_argument("--bucket-bytes", type=float, default=25 * 2**20, help="gradient bucket, bytes (comm.bucket_cap_bytes)")
    p.add_argument("--algorithm", choices=["auto", "ring", "tree"], default="auto")
    p.add_argument("--no-overlap", action="store_true", help="expose the whole allreduce (a lower bound)")
    p.add_argument("--gpus", type=int, nargs="*", default=[8, 16, 64, 256, 512, 1024, 2048, 4096])
    p.add_argument("--stages", type=int, nargs="*", default=[1, 2, 4, 8])
    for name in PRESETS["h100"]:
        p.add_argument("--" + name.replace("_", "-"), type=float, default=None, help="overrides the preset")
    a = p.parse_args()
    for name, value in list(PRESETS[a.preset].items()) + list(MODELS[a.model].items()):
        if getattr(a, name) is None:
            setattr(a, name, value)
    if a.sample_seconds <= 0:
        a.sample_seconds = a.flops_per_sample / (a.device_flops * a.mfu)
    return a


def allreduce_seconds(bytes_, n, bw, alpha, algorithm):
    if n <= 1:
        return 0.0
    ring = 2 * (n - 1) / n * bytes_ / bw + 2 * (n - 1) * alpha
    tree = 2 * bytes_ / bw + 2 * math.log2(n) * alpha
    return {"ring": ring, "tree": tree, "auto": min(ring, tree)}[algorithm]


def project(a, gpus, stages):
    """One layout's projection, or None when it does not fit."""
    if gpus % stages:
        return None
    dp = gpus // stages
    m = a.micro_batches if stages > 1 else 1
    if a.batch % m:
        return None
    per_micro = (a.batch / m) * a.sample_seconds / stages
    compute = (m + stages - 1) * per_micro
    pipeline_local = stages <= a.gpus_per_node
    p2p_bw, p2p_alpha = (a.intra_bw, a.intra_alpha) if pipeline_local else (a.inter_bw, a.inter_alpha)
    p2p = 0.0 if stages == 1 else 2 * (m + stages - 1) * (p2p_alpha + (a.batch / m) * a.activation_bytes / p2p_bw)
    # A stage's DP group spans nodes once dp * stages exceeds a node.
    across_nodes = gpus > a.gpus_per_node
    bw, alpha = (a.inter_bw, a.inter_alpha) if across_nodes else (a.intra_bw, a.intra_alpha)
    stage_bytes = a.params * a.grad_bytes / stages
    allreduce = allreduce_seconds(stage_bytes, dp, bw, alpha, a.algorithm)
    last_bucket = allreduce_seconds(min(a.bucket_bytes, stage_bytes), dp, bw, alpha, a.algorithm)
    backward_of_last = per_micro * 2 / 3  # backward is ~2/3 of a training step's FLOPs
    hidden = 0.0 if a.no_overlap else backward_of_last
    exposed = 0.0 if dp == 1 else max(allreduce - hidden, last_bucket)
    step = compute + p2p + exposed
    ideal = a.batch * a.sample_seconds / stages
    return dict(gpus=gpus, dp=dp, pp=stages, step=step, compute=compute, p2p=p2p, allreduce=allreduce,
                exposed=exposed, efficiency=ideal / step, samples=dp * a.batch / step)


def main():
    a = parse_args()
    print(f"preset {a.preset}: NVLink-class {a.intra_bw / 1e9:g} GB/s alpha {a.intra_alpha * 1e6:g} us, "
          f"between nodes {a.inter_bw / 1e9:g} GB/s alpha {a.inter_alpha * 1e6:g} us, "
          f"{a.gpus_per_node if a.gpus_per_node < 1 << 30 else 'all'} per node; {a.algorithm} allreduce"
          f"{', not overlapped' if a.no_overlap else ''}")
    print(f"model {a.model}: {a.params:,.0f} parameters x {a.grad_bytes} B, {a.sample_seconds * 1e6:.3g} us compute per sample, "
          f"batch {a.batch} per replica, {a.micro_batches} micro-batches when pipelined")
    print(f"{'GPUs':>6} {'DP':>5} {'PP':>3} {'step ms':>9} {'compute':>9} {'p2p':>8} {'allreduce':>10} "
          f"{'exposed':>9} {'efficiency':>10} {'samples/s':>11}")
    for gpus in a.gpus:
        for stages in a.stages:
            r = project(a, gpus, stages)
            if r is None:
                continue
            print(f"{r['gpus']:>6} {r['dp']:>5} {r['pp']:>3} {r['step'] * 1e3:>9.3f} {r['compute'] * 1e3:>9.3f} "
                  f"{r['p2p'] * 1e3:>8.3f} {r['allreduce'] * 1e3:>10.3f} {r['exposed'] * 1e3:>9.3f} "
                  f"{r['efficiency']:>10.1%} {r['samples']:>11,.0f}")


if __name__ == "__main__":
    main()
