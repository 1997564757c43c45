#pragma once
// torch's own AdamW over the same parameter groups as the trainer's
// (decays()): the independent reference for parity tests and benchmarks.

#include <torch/torch.h>

#include <memory>
#include <vector>

#include "trainer/optimizer.h"

namespace vlm {

inline std::unique_ptr<torch::optim::AdamW> torch_adamw(const std::vector<UniqueParameter>& parameters,
                                                        const OptimConfig& c) {
  auto options = [&](double weight_decay) {
    return torch::optim::AdamWOptions(c.lr()).betas({c.beta1(), c.beta2()}).eps(c.eps()).weight_decay(weight_decay);
  };
  std::vector<torch::Tensor> decayed, not_decayed;
  for (const UniqueParameter& p : parameters) (decays(p) ? decayed : not_decayed).push_back(p.tensor);
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(decayed, std::make_unique<torch::optim::AdamWOptions>(options(c.weight_decay())));
  groups.emplace_back(not_decayed, std::make_unique<torch::optim::AdamWOptions>(options(0.0)));
  return std::make_unique<torch::optim::AdamW>(std::move(groups), options(c.weight_decay()));
}

}  // namespace vlm
