#pragma once
// One parameter's AdamW state as checkpoints hold it. The trainer's optimizer
// (trainer/optimizer.h) hands its live state over to be saved, and restores
// fill it in place.

#include <torch/torch.h>

#include <cstdint>
#include <string>

namespace vlm {

struct AdamState {
  std::string parameter;  // the global name
  int64_t step = 0;       // updates applied
  torch::Tensor exp_avg, exp_avg_sq;
};

}  // namespace vlm
