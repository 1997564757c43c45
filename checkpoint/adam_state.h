#pragma once
// One parameter's AdamW state as checkpoints hold it. The trainer's optimizer
// (trainer/optimizer.h) hands its live state over to be saved, and restores
// fill it in place.

#include <torch/torch.h>

#include <cstdint>
#include <string>

namespace vlm {

// The state of a run of one parameter's elements (ZeRO-1 shards it), or of
// all of them: 1-D, from element `start` of the flattened parameter.
struct AdamState {
  std::string parameter;  // the global name
  int64_t start = 0;
  int64_t step = 0;       // updates applied
  torch::Tensor exp_avg, exp_avg_sq;
};

}  // namespace vlm
