#include "data/sampler.h"

#include <glog/logging.h>

#include <numeric>
#include <stdexcept>
#include <string>

#include "data/task.h"

namespace vlm {

DistributedSampler::DistributedSampler(int64_t dataset_size, int64_t global_batch, int64_t dp_size,
                                       int64_t dp_rank, uint64_t seed, int64_t micro_batches)
    : dataset_size_(dataset_size), global_batch_(global_batch), dp_size_(dp_size), dp_rank_(dp_rank),
      micro_batches_(micro_batches), seed_(seed), steps_per_epoch_(dataset_size / global_batch) {
  CHECK(dp_rank >= 0 && dp_rank < dp_size);
  if (global_batch % (dp_size * micro_batches) != 0) {
    throw std::invalid_argument("loop.global_batch_size(" + std::to_string(global_batch) +
                                ") must be divisible by the data-parallel size(" + std::to_string(dp_size) +
                                ") x loop.micro_batches(" + std::to_string(micro_batches) + ")");
  }
  if (steps_per_epoch_ == 0) {
    throw std::invalid_argument("loop.global_batch_size(" + std::to_string(global_batch) +
                                ") exceeds the samples per epoch(" + std::to_string(dataset_size) +
                                "); lower it or raise data.train_samples");
  }
}

std::vector<int64_t> DistributedSampler::permutation(int64_t epoch) const {
  std::vector<int64_t> perm(dataset_size_);
  std::iota(perm.begin(), perm.end(), 0);
  // Fisher-Yates with a counter-based generator.
  for (int64_t i = dataset_size_ - 1; i > 0; --i) {
    const uint64_t r = mix_seed(seed_ ^ (0x5bd1e995ULL * (epoch + 1)), static_cast<uint64_t>(i));
    std::swap(perm[i], perm[r % static_cast<uint64_t>(i + 1)]);
  }
  return perm;
}

std::vector<int64_t> global_batch_positions(int64_t global_batch, int64_t micro_batches, int64_t dp_size,
                                            int64_t dp_rank, int64_t micro) {
  const int64_t micro_size = global_batch / micro_batches;
  std::vector<int64_t> out;
  for (int64_t i = micro * micro_size + dp_rank; i < (micro + 1) * micro_size; i += dp_size) out.push_back(i);
  return out;
}

std::vector<int64_t> DistributedSampler::indices(int64_t step, int64_t micro) {
  CHECK(micro >= 0 && micro < micro_batches_);
  const int64_t epoch = step / steps_per_epoch_;
  if (epoch != cached_epoch_) {
    cached_permutation_ = permutation(epoch);
    cached_epoch_ = epoch;
  }
  const int64_t start = (step % steps_per_epoch_) * global_batch_;
  std::vector<int64_t> out;
  for (int64_t position : global_batch_positions(global_batch_, micro_batches_, dp_size_, dp_rank_, micro)) {
    out.push_back(cached_permutation_[start + position]);
  }
  return out;
}

}  // namespace vlm
