#pragma once
// Note [Shared parameters]: a weight shared by several layers is one tensor
// registered in each of them, so Module::parameters() returns it once per
// registration. Anything that iterates parameters (optimizer, gradient
// reduction, clipping, norms, checkpoints) must use unique_parameters(), or a
// shared weight is stepped, reduced or counted several times.

#include <torch/torch.h>

#include <string>
#include <vector>

namespace vlm {

struct UniqueParameter {
  std::string name;                  // first registration, in registration order
  std::vector<std::string> aliases;  // the other registrations of the same tensor
  torch::Tensor tensor;
};

// Parameters deduplicated by tensor identity, in registration order.
std::vector<UniqueParameter> unique_parameters(const torch::nn::Module& module);

// Just the tensors of unique_parameters().
std::vector<torch::Tensor> unique_tensors(const torch::nn::Module& module);

// Total elements over unique parameters.
int64_t unique_parameter_count(const torch::nn::Module& module);

}  // namespace vlm
