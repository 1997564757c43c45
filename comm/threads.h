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

// While it lives, the calling thread computes with one thread: OpenMP's
// setting (ATen's pool, oneDNN) is per thread; OpenBLAS's is the process's,
// so other threads computing meanwhile must want one too (trainer/replica_threads.h).
class OneComputeThread {
 public:
  OneComputeThread();
  ~OneComputeThread();
  OneComputeThread(const OneComputeThread&) = delete;
  OneComputeThread& operator=(const OneComputeThread&) = delete;

 private:
  int openmp_ = 0, openblas_ = 0;  // the settings to restore; 0: none to restore
};

}  // namespace vlm
