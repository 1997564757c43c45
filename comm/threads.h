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

// While it lives, the calling thread computes with one thread: the settings
// that are per thread (OpenMP's, for ATen's pool and oneDNN; MKL's local one).
// OpenBLAS's is the process's: see OneBlasThread.
class OneComputeThread {
 public:
  OneComputeThread();
  ~OneComputeThread();
  OneComputeThread(const OneComputeThread&) = delete;
  OneComputeThread& operator=(const OneComputeThread&) = delete;

 private:
  int openmp_ = 0, mkl_ = -1;  // the settings to restore (0 / -1: none)
};

// While it lives, OpenBLAS (when loaded) uses one thread, in the whole
// process: for threads that call it at once (trainer/replica_threads.h).
class OneBlasThread {
 public:
  OneBlasThread();
  ~OneBlasThread();
  OneBlasThread(const OneBlasThread&) = delete;
  OneBlasThread& operator=(const OneBlasThread&) = delete;

 private:
  int openblas_ = 0;  // the setting to restore; 0: none
};

}  // namespace vlm
