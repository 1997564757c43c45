#pragma once
// Distributed sampler: each epoch is a seeded permutation of the dataset; DP
// rank r takes every dp-th index starting at r, so the ranks' shares are
// disjoint and equal, and their union at each step is exactly the global
// batch one process would draw. The tail that does not fill a global batch is
// dropped. Deterministic for a given seed on every platform (own shuffle,
// not std::shuffle, whose algorithm is implementation-defined).

#include <cstdint>
#include <vector>

namespace vlm {

// Indices in the global batch of the samples rank `dp_rank` takes for
// micro-batch `micro`, in the order DistributedSampler::indices gives them.
std::vector<int64_t> global_batch_positions(int64_t global_batch, int64_t micro_batches, int64_t dp_size,
                                            int64_t dp_rank, int64_t micro);

class DistributedSampler {
 public:
  // Each global batch is cut into `micro_batches` consecutive slices; rank r
  // takes every dp-th index of each slice.
  DistributedSampler(int64_t dataset_size, int64_t global_batch, int64_t dp_size, int64_t dp_rank,
                     uint64_t seed, int64_t micro_batches = 1);

  int64_t steps_per_epoch() const { return steps_per_epoch_; }

  // Dataset indices of this rank's share of micro-batch `micro` of global step
  // `step` (any step, any order: the cursor is just the step number).
  std::vector<int64_t> indices(int64_t step, int64_t micro = 0);

  // The permutation of `epoch` (exposed for tests).
  std::vector<int64_t> permutation(int64_t epoch) const;

 private:
  int64_t dataset_size_, global_batch_, dp_size_, dp_rank_, micro_batches_;
  uint64_t seed_;
  int64_t steps_per_epoch_;
  int64_t cached_epoch_ = -1;
  std::vector<int64_t> cached_permutation_;
};

}  // namespace vlm
