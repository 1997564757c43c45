#pragma once
// AdamW over the model's unique parameters (Note [Shared parameters]) with
// decoupled weight decay on matrices only, whose update the device itself can
// cancel: step() takes whether to apply it and the clipping factor as device
// tensors, so skipping a step with a non-finite loss or gradient costs no host
// sync on a GPU. On the CPU, where reading them is free, it reads them and
// runs torch::optim::AdamW's arithmetic fused into one pass per tensor
// (trainer/fused_adamw.h): within a few ulps of torch's, in a fraction of
// its time (bench/RESULTS.md); the masked form costs 1.6-1.7x torch's there.

#include <torch/torch.h>

#include <vector>

#include "checkpoint/adam_state.h"
#include "model/parameters.h"
#include "proto/config.pb.h"

namespace vlm {

// Biases, norms, positional embeddings and logit_scale are not decayed (as in
// CLIP/CoCa training): decaying them pulls toward zero values with no meaning.
bool decays(const UniqueParameter& p);

// What AdamW updates: a run of one parameter's elements (this rank's shard
// under ZeRO-1, comm/gradient_reducer.h), or the whole parameter.
struct AdamWSegment {
  std::string parameter;   // global name
  int64_t start = 0;       // first element, in the parameter's flattened values
  torch::Tensor values;    // 1-D contiguous view of those elements
  torch::Tensor gradient;  // 1-D view of their gradient; undefined: `owner`'s gradient at each step
  torch::Tensor owner;     // the parameter itself
  bool decays = false;
};

// Every parameter whole, its gradient read at each step.
std::vector<AdamWSegment> whole_parameters(const std::vector<UniqueParameter>& parameters);

class AdamW {
 public:
  AdamW(std::vector<AdamWSegment> segments, const OptimConfig& config);
  AdamW(const std::vector<UniqueParameter>& parameters, const OptimConfig& config)
      : AdamW(whole_parameters(parameters), config) {}

  // One update from the parameters' gradients, at learning rate `lr`.
  // apply: a 0-dim bool tensor; false leaves parameters and state bit-for-bit
  // as they were, whatever the gradients hold (NaN included). grad_scale: a
  // 0-dim float32 tensor multiplying the gradients (clipping), or undefined.
  // Bias correction counts the updates applied before this one, as told by
  // count_applied(): the caller learns whether a step was applied later.
  void step(double lr, const torch::Tensor& apply, const torch::Tensor& grad_scale);
  // The two forms step() chooses between by the flag's device; public for tests.
  void step_on_host(double lr, bool apply, double grad_scale);
  void step_on_device(double lr, const torch::Tensor& apply, const torch::Tensor& grad_scale);
  void count_applied() { ++applied_; }
  int64_t applied_steps() const { return applied_; }

  // The live state, for a checkpoint (by global name and first element); a
  // restore fills it in place and then sets the step count with set_applied_steps().
  std::vector<AdamState> state() const;
  void set_applied_steps(int64_t steps) { applied_ = steps; }
  int64_t state_bytes() const;  // both moments, on this rank

 private:
  struct Slot {
    AdamWSegment segment;
    torch::Tensor exp_avg, exp_avg_sq;
    double weight_decay;
    torch::Tensor gradient() const;
  };
  std::vector<Slot> slots_;
  OptimConfig config_;
  int64_t applied_ = 0;
};

}  // namespace vlm
