#include "comm/gradient_reducer.h"

#include <glog/logging.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>

#include <algorithm>
#include <chrono>
#include <mutex>

namespace vlm {

struct GradientReducer::Bucket {
  torch::Tensor buffer;              // flat float32; parameters' gradients are views into it
  torch::Tensor values;              // the same layout; parameters' values are views into it
  torch::Tensor reduced;             // ZeRO-1: this rank's shard of the averaged gradient
  int64_t shard = 0;                 // elements per rank (ZeRO-1), or the whole bucket
  bool whole = true;                 // allreduced: every rank gets the whole average
  std::vector<size_t> parameters;
  size_t pending = 0;                // parameters not yet ready in this backward
  WorkPtr work;                      // the in-flight allreduce, if launched
};

// Hooks outlive nothing they point to: they reach the reducer through this
// state, which the reducer clears when it is destroyed.
struct GradientReducer::HookState {
  std::mutex mutex;
  GradientReducer* reducer = nullptr;
};

namespace {

class ReadyHook : public torch::autograd::FunctionPostHook {
 public:
  explicit ReadyHook(std::function<void()> on_ready) : on_ready_(std::move(on_ready)) {}
  torch::autograd::variable_list operator()(const torch::autograd::variable_list& outputs,
                                            const torch::autograd::variable_list& /*inputs*/) override {
    on_ready_();
    return outputs;
  }

 private:
  std::function<void()> on_ready_;
};

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

}  // namespace

GradientReducer::GradientReducer(std::vector<torch::Tensor> parameters, Backend& backend, ReducerOptions options,
                                 std::vector<bool> whole_gradient)
    : parameters_(std::move(parameters)), backend_(backend), options_(options),
      sharded_(options.shard && backend.size() > 1),
      bucket_of_(parameters_.size()), ready_(parameters_.size(), false),
      hook_state_(std::make_shared<HookState>()) {
  whole_gradient.resize(parameters_.size(), false);
  // Buckets in reverse registration order: backward finishes the last layers first.
  int64_t cap = options_.first_bucket_bytes;
  std::vector<size_t> current;
  int64_t current_bytes = 0;
  auto close_bucket = [&] {
    if (current.empty()) return;
    Bucket bucket;
    bucket.parameters = current;
    buckets_.push_back(std::move(bucket));
    current.clear();
    current_bytes = 0;
    cap = options_.bucket_cap_bytes;
  };
  for (size_t i = parameters_.size(); i-- > 0;) {
    const torch::Tensor& p = parameters_[i];
    CHECK(p.scalar_type() == torch::kFloat && p.is_contiguous()) << "reducer parameters must be contiguous float32";
    current.push_back(i);
    current_bytes += p.nbytes();
    if (current_bytes >= cap) close_bucket();
  }
  close_bucket();

  const int64_t ranks = sharded_ ? backend_.size() : 1;
  const int64_t rank = sharded_ ? backend_.rank() : 0;
  torch::NoGradGuard no_grad;
  for (size_t b = 0; b < buckets_.size(); ++b) {
    Bucket& bucket = buckets_[b];
    int64_t elements = 0;
    for (size_t i : bucket.parameters) elements += parameters_[i].numel();
    bucket.shard = (elements + ranks - 1) / ranks;  // padded with zeros to shard x ranks
    const auto options = parameters_[bucket.parameters.front()].options().requires_grad(false);
    bucket.buffer = torch::zeros({bucket.shard * ranks}, options);
    bucket.values = torch::zeros({bucket.shard * ranks}, options);
    bucket.whole = !sharded_;
    int64_t offset = 0;
    for (size_t i : bucket.parameters) {
      torch::Tensor& p = parameters_[i];
      bucket.whole = bucket.whole || whole_gradient[i];
      torch::Tensor values = bucket.values.narrow(0, offset, p.numel());
      values.copy_(p.detach().reshape({-1}));
      p.set_data(values.view_as(p));
      p.mutable_grad() = bucket.buffer.narrow(0, offset, p.numel()).view_as(p);
      offset += p.numel();
      bucket_of_[i] = b;
    }
    if (!bucket.whole) bucket.reduced = torch::empty({bucket.shard}, options);
    bucket.pending = bucket.parameters.size();
    // This rank's segments: each parameter's overlap with [rank x shard, (rank + 1) x shard).
    const int64_t first = rank * bucket.shard, last = first + bucket.shard;
    offset = 0;
    for (size_t i : bucket.parameters) {
      const int64_t begin = std::max(offset, first), end = std::min(offset + parameters_[i].numel(), last);
      if (begin < end) {
        const torch::Tensor gradient = bucket.whole ? bucket.buffer.narrow(0, begin, end - begin)
                                                    : bucket.reduced.narrow(0, begin - first, end - begin);
        segments_.push_back({i, begin - offset, bucket.values.narrow(0, begin, end - begin), gradient});
      }
      offset += parameters_[i].numel();
    }
  }

  hook_state_->reducer = this;
  for (size_t i = 0; i < parameters_.size(); ++i) {
    auto accumulator = torch::autograd::impl::grad_accumulator(parameters_[i]);
    std::weak_ptr<HookState> weak = hook_state_;
    const uintptr_t key = accumulator->add_post_hook(std::make_unique<ReadyHook>([weak, i] {
      if (auto state = weak.lock()) {
        std::lock_guard<std::mutex> lock(state->mutex);
        if (state->reducer != nullptr) state->reducer->mark_ready(i);
      }
    }));
    // The tensor holds its accumulator weakly: keep it alive, or the hook is lost.
    hooks_.emplace_back(std::move(accumulator), key);
  }
}

GradientReducer::~GradientReducer() {
  {
    std::lock_guard<std::mutex> lock(hook_state_->mutex);
    hook_state_->reducer = nullptr;
  }
  for (auto& [accumulator, key] : hooks_) accumulator->del_post_hook(key);
}

void GradientReducer::zero_grad() {
  reset_for_backward();  // also recovers from a step that failed half-way
  for (Bucket& bucket : buckets_) bucket.buffer.zero_();
}

void GradientReducer::reset_for_backward() {
  next_to_launch_ = 0;
  std::fill(ready_.begin(), ready_.end(), false);
  for (Bucket& bucket : buckets_) {
    bucket.pending = bucket.parameters.size();
    bucket.work.reset();
  }
}

void GradientReducer::set_synchronize(bool synchronize) { synchronize_ = synchronize; }

void GradientReducer::mark_ready(size_t parameter) {
  if (!synchronize_) return;
  CHECK(!ready_[parameter]) << "gradient of parameter " << parameter << " became ready twice in one backward";
  ready_[parameter] = true;
  --buckets_[bucket_of_[parameter]].pending;
  if (options_.overlap) launch_ready_buckets();
}

void GradientReducer::launch_ready_buckets() {
  // Strictly in bucket order, so every rank issues the same sequence.
  while (next_to_launch_ < buckets_.size() && buckets_[next_to_launch_].pending == 0) {
    launch(buckets_[next_to_launch_++]);
  }
}

void GradientReducer::launch(Bucket& bucket) {
  if (backend_.size() == 1) return;
  bucket.work = bucket.whole ? backend_.allreduce(bucket.buffer, {ReduceOp::kAvg, options_.timeout})
                             : backend_.reduce_scatter(bucket.buffer, bucket.reduced, {ReduceOp::kAvg, options_.timeout});
}

void GradientReducer::finalize() {
  CHECK(synchronize_) << "finalize() belongs to a synchronised backward";
  const auto start = std::chrono::steady_clock::now();
  stats_ = ReductionStats{};
  stats_.buckets = static_cast<int>(buckets_.size());
  for (const Bucket& bucket : buckets_) {
    stats_.buckets_done_before_backward_end += bucket.work && bucket.work->is_completed();
  }
  // Parameters that got no gradient this step never fired their hook.
  for (Bucket& bucket : buckets_) bucket.pending = 0;
  launch_ready_buckets();
  for (Bucket& bucket : buckets_) {
    if (!bucket.work) continue;
    bucket.work->wait();
    stats_.communication_seconds += bucket.work->seconds();
    stats_.bytes += bucket.buffer.nbytes();
    bucket.work.reset();
  }
  stats_.exposed_seconds = seconds_since(start);
  reset_for_backward();
}

void GradientReducer::broadcast_parameters(int root, Millis timeout) {
  if (backend_.size() == 1) return;
  std::vector<WorkPtr> works;
  for (Bucket& bucket : buckets_) works.push_back(backend_.broadcast(bucket.values, {root, timeout}));
  for (auto& work : works) work->wait();
}

void GradientReducer::gather_parameters(Millis timeout) {
  if (!sharded_) return;
  std::vector<WorkPtr> works;
  for (Bucket& bucket : buckets_) {
    const torch::Tensor mine = bucket.values.narrow(0, backend_.rank() * bucket.shard, bucket.shard);
    works.push_back(backend_.allgather(mine, bucket.values, {timeout}));
  }
  for (auto& work : works) work->wait();
}

std::vector<int64_t> GradientReducer::bucket_bytes() const {
  std::vector<int64_t> bytes;
  for (const Bucket& bucket : buckets_) bytes.push_back(bucket.buffer.nbytes());
  return bytes;
}

}  // namespace vlm
