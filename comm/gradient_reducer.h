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
// Parameters live in the buckets too: each parameter's values are a view into
// its bucket's flat `values`, laid out like the gradients, so an optimizer can
// update a bucket's run of parameters in place and ZeRO can gather them.
//
// Note [ZeRO-1]: with `shard`, each bucket (padded to a multiple of the DP
// size) is split into equal shards, one per rank. A bucket is reduce-scattered
// instead of allreduced, so each rank receives the average of its shard only;
// the optimizer updates that shard of the parameters (shard_segments()), and
// gather_parameters() all-gathers every rank's updated shard in place. The
// bytes on the wire equal an allreduce's (a ring allreduce is a
// reduce-scatter then an all-gather); the optimizer state is 1/dp. Buckets
// holding a parameter that needs its whole gradient afterwards (one tied
// across pipeline stages, summed over them after this reduction) are
// allreduced as before; their shard is still the only part updated here.
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
  bool shard = false;   // ZeRO-1 (Note [ZeRO-1]); no effect on a group of one
  Millis timeout = kDefaultTimeout;
};

// A run of one parameter's elements within this rank's shard of a bucket:
// what the optimizer updates. Without sharding, every whole parameter.
struct ShardSegment {
  size_t parameter = 0;    // index into the reducer's parameters
  int64_t start = 0;       // first element, in the parameter's flattened values
  torch::Tensor values;    // 1-D view into the bucket's parameter values
  torch::Tensor gradient;  // 1-D view of the same elements' averaged gradient (after finalize())
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
  // `parameters` must be unique, float32, contiguous and on one device; their
  // values move into the buckets (set_data: the tensors keep their identity).
  // `whole_gradient[i]`: parameter i's whole averaged gradient is needed
  // after finalize(), not just this rank's shard (default: none).
  GradientReducer(std::vector<torch::Tensor> parameters, Backend& backend, ReducerOptions options,
                  std::vector<bool> whole_gradient = {});
  ~GradientReducer();
  GradientReducer(const GradientReducer&) = delete;
  GradientReducer& operator=(const GradientReducer&) = delete;

  // Zeroes every bucket and resets the readiness bookkeeping: call once per step.
  void zero_grad();
  void set_synchronize(bool synchronize);
  void set_timeout(Millis timeout) { options_.timeout = timeout; }
  void finalize();

  // Copies `root`'s parameter values to every rank (one broadcast per bucket).
  void broadcast_parameters(int root, Millis timeout);
  // This rank's part of the parameters and their reduced gradients, in bucket order.
  const std::vector<ShardSegment>& shard_segments() const { return segments_; }
  bool sharded() const { return sharded_; }
  // ZeRO-1: every rank's updated shard to every rank (in place); a no-op unsharded.
  void gather_parameters(Millis timeout);

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
  bool sharded_ = false;  // options_.shard on a group of more than one
  std::vector<ShardSegment> segments_;
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
