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

class AdamW {
 public:
  AdamW(const std::vector<UniqueParameter>& parameters, const OptimConfig& config);

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

  // The live state, for a checkpoint (by global name); a restore fills it in
  // place and then sets the step count with set_applied_steps().
  std::vector<AdamState> state() const;
  void set_applied_steps(int64_t steps) { applied_ = steps; }

 private:
  struct Slot {
    torch::Tensor parameter, exp_avg, exp_avg_sq;
    std::string name;
    double weight_decay;
  };
  std::vector<Slot> slots_;
  OptimConfig config_;
  int64_t applied_ = 0;
};

}  // namespace vlm
