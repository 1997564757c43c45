#pragma once
// AdamW over the model's unique parameters (Note [Shared parameters]) with
// decoupled weight decay on matrices only.

#include <torch/torch.h>

#include <memory>

#include "proto/config.pb.h"

namespace vlm {

std::unique_ptr<torch::optim::AdamW> make_adamw(const torch::nn::Module& model, const OptimConfig& config);

// Sets the learning rate of every parameter group.
void set_learning_rate(torch::optim::Optimizer& optimizer, double lr);

}  // namespace vlm
