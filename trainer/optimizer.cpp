#include "trainer/optimizer.h"

#include "model/parameters.h"

namespace vlm {
namespace {

// Biases, norms, positional embeddings and logit_scale are not decayed (as in
// CLIP/CoCa training): decaying them pulls toward zero values with no meaning.
bool decays(const UniqueParameter& p) {
  return p.tensor.dim() >= 2 && p.name.find("_pos") == std::string::npos;
}

}  // namespace

std::unique_ptr<torch::optim::AdamW> make_adamw(const torch::nn::Module& model, const OptimConfig& c) {
  auto options = [&](double weight_decay) {
    return std::make_unique<torch::optim::AdamWOptions>(torch::optim::AdamWOptions(c.lr())
                                                            .betas({c.beta1(), c.beta2()})
                                                            .eps(c.eps())
                                                            .weight_decay(weight_decay));
  };
  std::vector<torch::Tensor> decayed, not_decayed;
  for (const UniqueParameter& p : unique_parameters(model)) (decays(p) ? decayed : not_decayed).push_back(p.tensor);
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(decayed, options(c.weight_decay()));
  groups.emplace_back(not_decayed, options(0.0));
  return std::make_unique<torch::optim::AdamW>(std::move(groups), *options(c.weight_decay()));
}

void set_learning_rate(torch::optim::Optimizer& optimizer, double lr) {
  for (auto& group : optimizer.param_groups()) {
    static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lr);
  }
}

}  // namespace vlm
