#pragma once
// Data-parallel gradient reduction in the manner of PyTorch DDP's reducer.
//
// Unique parameters (Note [Shared parameters]: a shared weight is reduced
// once) are assigned to buckets in reverse registration order, since backward
// produces the last layers' gradients first; the first bucket is small so that
// communication starts early. Each parameter's gradient *is* a view into its
// bucket's flat buffer, so nothing is copied before or after communication.
// A post-hook on each parameter's gradient accumulator marks it ready once its
// gradient is complete for this backward (once, however many layers share it);
// a bucket whose parameters are all ready is allreduced at once, on the
// backend's communication thread, while backward goes on. Buckets are launched
// strictly in bucket order, so every rank issues the same sequence. finalize()
// launches any bucket still waiting (parameters unused this step keep zero
// gradients), waits for all, and leaves averaged gradients in place.
//
// Gradient accumulation: set_synchronize(false) for all but the last
// micro-batch of a step, and the hooks only let gradients accumulate (DDP's
// no_sync). The caller zeroes gradients with zero_grad(), never by setting
// them to None, which would detach them from the buckets.

#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "comm/backend.h"

namespace vlm {

constexpr int64_t kDefaultBucketCapBytes = 25 * 1024 * 1024;   // PyTorch DDP's default
constexpr int64_t kDefaultFirstBucketBytes = 1024 * 1024;      // DDP's first bucket

struct ReducerOptions {
  int64_t bucket_cap_bytes = kDefaultBucketCapBytes;
  int64_t first_bucket_bytes = kDefaultFirstBucketBytes;
  bool overlap = true;  // false: every bucket is reduced in finalize(), after backward
  Millis timeout = kDefaultTimeout;
};

// What the last synchronised backward's reduction did.
struct ReductionStats {
  int buckets = 0;
  int buckets_done_before_backward_end = 0;  // completed before finalize() was called
  double communication_seconds = 0;          // sum of the buckets' allreduce times
  double exposed_seconds = 0;                // finalize()'s wait: communication not hidden behind backward
  int64_t bytes = 0;
};

class GradientReducer {
 public:
  // `parameters` must be unique, float32, contiguous and on one device.
  GradientReducer(std::vector<torch::Tensor> parameters, Backend& backend, ReducerOptions options);
  ~GradientReducer();
  GradientReducer(const GradientReducer&) = delete;
  GradientReducer& operator=(const GradientReducer&) = delete;

  // Zeroes every bucket and resets the readiness bookkeeping: call once per step.
  void zero_grad();
  void set_synchronize(bool synchronize);
  void set_timeout(Millis timeout) { options_.timeout = timeout; }
  void finalize();

  // Copies `root`'s parameter values to every rank (one flat broadcast).
  void broadcast_parameters(int root, Millis timeout);

  // Bucket sizes in bytes, in launch order.
  std::vector<int64_t> bucket_bytes() const;
  const ReductionStats& last_stats() const { return stats_; }

 private:
  struct Bucket;
  struct HookState;
  void mark_ready(size_t parameter);
  void reset_for_backward();
  void launch_ready_buckets();
  void launch(Bucket& bucket);

  std::vector<torch::Tensor> parameters_;
  Backend& backend_;
  ReducerOptions options_;
  std::vector<Bucket> buckets_;
  std::vector<size_t> bucket_of_;  // parameter -> bucket
  std::vector<bool> ready_;        // parameter -> gradient complete this backward
  size_t next_to_launch_ = 0;
  bool synchronize_ = true;
  std::shared_ptr<HookState> hook_state_;  // hooks reach the reducer through this, while it lives
  std::vector<std::pair<std::shared_ptr<torch::autograd::Node>, uintptr_t>> hooks_;
  ReductionStats stats_;
};

}  // namespace vlm
