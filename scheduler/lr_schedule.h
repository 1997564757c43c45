#pragma once
// Learning-rate schedules as pure functions of the step: no state to save,
// so a resumed run gets the same rate from the step number alone.

#include <cstdint>

namespace vlm {

struct WarmupCosine {
  double peak_lr = 1e-3;
  double min_lr_ratio = 0.1;  // final rate = peak_lr * min_lr_ratio
  int64_t warmup_steps = 0;   // linear ramp from peak_lr / warmup_steps to peak_lr
  int64_t total_steps = 1;

  // Rate for optimizer step `step` (0-based): linear warm-up reaching peak_lr
  // at step warmup_steps - 1, then a half cosine down to peak_lr * min_lr_ratio
  // at the last step.
  double at(int64_t step) const;
};

}  // namespace vlm
