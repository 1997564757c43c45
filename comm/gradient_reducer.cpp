#include "comm/gradient_reducer.h"

#include <glog/logging.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>

#include <chrono>
#include <mutex>

namespace vlm {

struct GradientReducer::Bucket {
  torch::Tensor buffer;              // flat float32; parameters' gradients are views into it
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

GradientReducer::GradientReducer(std::vector<torch::Tensor> parameters, Backend& backend, ReducerOptions options)
    : parameters_(std::move(parameters)), backend_(backend), options_(options),
      bucket_of_(parameters_.size()), ready_(parameters_.size(), false),
      hook_state_(std::make_shared<HookState>()) {
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

  for (size_t b = 0; b < buckets_.size(); ++b) {
    Bucket& bucket = buckets_[b];
    int64_t elements = 0;
    for (size_t i : bucket.parameters) elements += parameters_[i].numel();
    bucket.buffer = torch::zeros({elements}, parameters_[bucket.parameters.front()].options().requires_grad(false));
    int64_t offset = 0;
    for (size_t i : bucket.parameters) {
      torch::Tensor& p = parameters_[i];
      p.mutable_grad() = bucket.buffer.narrow(0, offset, p.numel()).view_as(p);
      offset += p.numel();
      bucket_of_[i] = b;
    }
    bucket.pending = bucket.parameters.size();
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
  bucket.work = backend_.allreduce(bucket.buffer, {ReduceOp::kAvg, options_.timeout});
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
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> flat;
  for (const torch::Tensor& p : parameters_) flat.push_back(p.detach().reshape({-1}));
  torch::Tensor buffer = torch::cat(flat);
  backend_.broadcast(buffer, {root, timeout})->wait();
  int64_t offset = 0;
  for (torch::Tensor& p : parameters_) {
    p.detach().copy_(buffer.narrow(0, offset, p.numel()).view_as(p));
    offset += p.numel();
  }
}

std::vector<int64_t> GradientReducer::bucket_bytes() const {
  std::vector<int64_t> bytes;
  for (const Bucket& bucket : buckets_) bytes.push_back(bucket.buffer.nbytes());
  return bytes;
}

}  // namespace vlm
