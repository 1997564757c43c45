#pragma once
// Note [bf16 autocast]: device.precision BF16 runs forward passes under
// LibTorch's autocast: matrix products (linear, matmul, bmm) in bfloat16,
// reductions and losses in float32. Parameters, gradients and the optimizer
// state stay float32 (the "master weights"), so nothing else changes: the
// backward pass casts gradients back through the recorded casts.

#include <torch/torch.h>

namespace vlm {

// Whether forward passes on `device` run under autocast now.
bool autocast_enabled(const torch::Device& device);

// Autocast to bfloat16 on `device` for this scope (nothing when `enabled` is
// false); restores the previous state and frees the cast-weight cache on exit.
class AutocastGuard {
 public:
  AutocastGuard(const torch::Device& device, bool enabled);
  ~AutocastGuard();
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  bool enabled_ = false;
  torch::DeviceType type_ = torch::kCPU;
  bool was_enabled_ = false;
  torch::ScalarType previous_dtype_ = torch::kBFloat16;
};

}  // namespace vlm
