#include "model/parameters.h"

#include <unordered_map>

namespace vlm {

std::vector<UniqueParameter> unique_parameters(const torch::nn::Module& module) {
  std::vector<UniqueParameter> unique;
  std::unordered_map<const void*, size_t> index_of;
  for (const auto& p : module.named_parameters(/*recurse=*/true)) {
    const void* identity = p.value().unsafeGetTensorImpl();
    auto [it, inserted] = index_of.emplace(identity, unique.size());
    if (inserted) {
      unique.push_back({p.key(), {}, p.value()});
    } else {
      unique[it->second].aliases.push_back(p.key());
    }
  }
  return unique;
}

std::vector<torch::Tensor> unique_tensors(const torch::nn::Module& module) {
  std::vector<torch::Tensor> tensors;
  for (auto& p : unique_parameters(module)) tensors.push_back(p.tensor);
  return tensors;
}

int64_t unique_parameter_count(const torch::nn::Module& module) {
  int64_t count = 0;
  for (const auto& t : unique_tensors(module)) count += t.numel();
  return count;
}

}  // namespace vlm
