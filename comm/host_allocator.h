#pragma once
// Note [Host allocator]: glibc's malloc hands large blocks back to the kernel
// when they are freed (mmap above a threshold, trimming of the heap's top).
// A training step allocates and frees the same activation-sized blocks every
// step, so every step paid for page faults that zeroed them again: 30% of a
// one-process run's CPU time here went to the kernel (bench/RESULTS.md).
// Blocks up to 32 MiB (glibc's largest mmap threshold) now come from the heap,
// and the heap keeps up to 1 GiB of free memory instead of trimming it. The
// cost: the peak stays resident, as with jemalloc or tcmalloc.

namespace vlm {

// Call first thing in main, before the first large allocation.
void keep_freed_memory_for_reuse();

}  // namespace vlm
