#pragma once
// Compute threads per rank for ATen and OpenBLAS, from the CPUs this rank may
// run on (sched_getaffinity, as Slurm or mpirun binding set them), not from
// the machine's core count: ranks bound to their own cores use them all;
// ranks sharing a set of CPUs split it, so no node is oversubscribed.

namespace vlm {

// Threads this rank should use: `requested` if > 0, else max(1, cpus / sharers)
// (ProcessInfo::cpus and cpu_sharers).
int threads_per_rank(int requested, int cpus, int sharers);

// Applies `threads` to ATen's intra-op pool and to OpenBLAS (when loaded).
void apply_thread_count(int threads);

}  // namespace vlm
