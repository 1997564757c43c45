#pragma once
// Compute threads per rank: with several ranks on one host, each gets
// cores / local ranks threads for ATen and OpenBLAS (as torchrun does), so
// ranks do not fight over cores.

namespace vlm {

// Threads this rank should use: `requested` if > 0, else max(1, cores / local_ranks).
int threads_per_rank(int requested, int local_ranks, int cores);

// Applies `threads` to ATen's intra-op pool and to OpenBLAS (when loaded).
void apply_thread_count(int threads);

}  // namespace vlm
