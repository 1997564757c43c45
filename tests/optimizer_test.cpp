// The trainer's AdamW in both its forms (on the host: the CPU's; on the
// device: a GPU's, run here on CPU tensors): applied, it follows
// torch::optim::AdamW (the host form bit-for-bit); told to skip, it leaves
// parameters and state bit-for-bit as they were, whatever the gradients
// hold; its gradient scale is plain multiplication.

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "trainer/fused_adamw.h"
#include "trainer/optimizer.h"

namespace vlm {
namespace {

OptimConfig adam_config() {
  OptimConfig c;
  c.set_lr(1e-2);
  c.set_beta1(0.9);
  c.set_beta2(0.95);
  c.set_eps(1e-8);
  c.set_weight_decay(0.1);
  return c;
}

// A matrix (decayed) and a bias (not), with gradients drawn per step.
struct Toy {
  std::vector<UniqueParameter> parameters;
  explicit Toy(uint64_t seed) {
    torch::manual_seed(seed);
    parameters.push_back({"layer.weight", {}, torch::randn({8, 5}).requires_grad_()});
    parameters.push_back({"layer.bias", {}, torch::randn({5}).requires_grad_()});
  }
  void set_gradients(int step, double fill = 0) {
    torch::manual_seed(1000 + step);
    for (auto& p : parameters) {
      p.tensor.mutable_grad() = fill == 0 ? torch::randn_like(p.tensor) : torch::full_like(p.tensor, fill);
    }
  }
  std::vector<torch::Tensor> values() const {
    std::vector<torch::Tensor> v;
    for (const auto& p : parameters) v.push_back(p.tensor.detach().clone());
    return v;
  }
};

const torch::Tensor kApply = torch::scalar_tensor(true), kSkip = torch::scalar_tensor(false);

void expect_follows_torch_adamw(bool on_device) {
  const OptimConfig c = adam_config();
  Toy ours(7), theirs(7);
  AdamW adam(ours.parameters, c);
  auto options = [&](double wd) { return torch::optim::AdamWOptions(c.lr()).betas({0.9, 0.95}).eps(1e-8).weight_decay(wd); };
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(std::vector<torch::Tensor>{theirs.parameters[0].tensor}, std::make_unique<torch::optim::AdamWOptions>(options(0.1)));
  groups.emplace_back(std::vector<torch::Tensor>{theirs.parameters[1].tensor}, std::make_unique<torch::optim::AdamWOptions>(options(0.0)));
  torch::optim::AdamW reference(std::move(groups), options(0.1));
  for (int step = 0; step < 6; ++step) {
    const double lr = 1e-2 * (1 + step) / 6;  // a warm-up: the learning rate is per step
    for (auto& group : reference.param_groups()) static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lr);
    ours.set_gradients(step);
    theirs.set_gradients(step);
    on_device ? adam.step_on_device(lr, kApply, {}) : adam.step_on_host(lr, true, 1.0);
    adam.count_applied();
    reference.step();
  }
  for (size_t i = 0; i < ours.parameters.size(); ++i) {
    const torch::Tensor a = ours.parameters[i].tensor.detach(), b = theirs.parameters[i].tensor.detach();
    if (on_device) {
      EXPECT_LT((a - b).abs().max().item<double>(), 1e-6) << ours.parameters[i].name;  // float32 rounding only
    } else {
      // The fused pass: the same operations, its scalars rounded once from double, over 6 steps.
      const double ulp = std::numeric_limits<float>::epsilon();
      EXPECT_LE(((a - b).abs() / b.abs().clamp_min(1e-3)).max().item<double>(), 4 * ulp) << ours.parameters[i].name;
    }
  }
  EXPECT_EQ(adam.applied_steps(), 6);
}

TEST(AdamW, OnTheHostItIsTorchAdamWWithinFourUlps) { expect_follows_torch_adamw(false); }
TEST(AdamW, OnTheDeviceItFollowsTorchAdamW) { expect_follows_torch_adamw(true); }

TEST(AdamW, OnTheDeviceASkippedStepChangesNothingWhateverTheGradients) {
  Toy skipped(3), straight(3);
  AdamW a(skipped.parameters, adam_config()), b(straight.parameters, adam_config());
  for (int step = 0; step < 2; ++step) {
    skipped.set_gradients(step), straight.set_gradients(step);
    a.step_on_device(1e-2, kApply, {}), a.count_applied();
    b.step_on_device(1e-2, kApply, {}), b.count_applied();
  }
  const auto before = skipped.values();
  std::vector<torch::Tensor> moments_before;
  for (const AdamState& s : a.state()) moments_before.push_back(s.exp_avg.clone()), moments_before.push_back(s.exp_avg_sq.clone());
  for (double poison : {std::nan(""), std::numeric_limits<double>::infinity(), 1e30}) {
    skipped.set_gradients(99, poison);
    a.step_on_device(1e-2, kSkip, torch::scalar_tensor(0.5f));
    const auto after = skipped.values();
    for (size_t i = 0; i < before.size(); ++i) EXPECT_TRUE(torch::equal(before[i], after[i])) << poison;
    const std::vector<AdamState> state = a.state();
    for (size_t i = 0; i < state.size(); ++i) {
      EXPECT_TRUE(torch::equal(state[i].exp_avg, moments_before[2 * i])) << poison;
      EXPECT_TRUE(torch::equal(state[i].exp_avg_sq, moments_before[2 * i + 1])) << poison;
    }
  }
  // The skipped steps do not count: the next updates are those of a run without them.
  for (int step = 2; step < 4; ++step) {
    skipped.set_gradients(step), straight.set_gradients(step);
    a.step_on_device(1e-2, kApply, {}), a.count_applied();
    b.step_on_device(1e-2, kApply, {}), b.count_applied();
  }
  for (size_t i = 0; i < before.size(); ++i) {
    EXPECT_TRUE(torch::equal(skipped.parameters[i].tensor, straight.parameters[i].tensor)) << i;
    EXPECT_TRUE(torch::equal(a.state()[i].exp_avg_sq, b.state()[i].exp_avg_sq)) << i;
  }
}

// Large enough for several threads' chunks and a tail: every value is
// updated, as torch's operations update it.
TEST(AdamW, TheFusedPassCoversLargeTensors) {
  torch::manual_seed(3);
  const int64_t n = 3 * (1 << 16) + 5;
  torch::Tensor p = torch::randn({n}), m = torch::randn({n}) * 1e-3, v = torch::rand({n}) * 1e-4;
  const torch::Tensor g = torch::randn({n}) * 1e-2;
  const torch::Tensor p0 = p.clone(), m0 = m.clone(), v0 = v.clone();
  AdamWUpdate u;
  u.grad_scale = 0.5f;
  u.decay = static_cast<float>(1 - 1e-3 * 0.1);
  u.beta1 = 0.9f, u.one_minus_beta1 = static_cast<float>(1 - 0.9);
  u.beta2 = 0.98f, u.one_minus_beta2 = static_cast<float>(1 - 0.98);
  u.sqrt_bias2 = static_cast<float>(std::sqrt(1 - 0.98 * 0.98));
  u.step_size = static_cast<float>(-1e-3 / (1 - 0.9 * 0.9));
  fused_adamw(p.data_ptr<float>(), g.data_ptr<float>(), m.data_ptr<float>(), v.data_ptr<float>(), n, u);
  const torch::Tensor gs = g * u.grad_scale;
  const torch::Tensor m1 = m0 * u.beta1 + gs * u.one_minus_beta1;
  const torch::Tensor v1 = v0 * u.beta2 + gs * gs * u.one_minus_beta2;
  const torch::Tensor denom = v1.sqrt() / u.sqrt_bias2 + u.eps;
  const torch::Tensor p1 = p0 * u.decay + u.step_size * m1 / denom;
  // An FMA rounds once where torch rounds twice: errors of a few ulps of the
  // terms summed (not of the result, which may cancel to almost nothing).
  const double ulp = std::numeric_limits<float>::epsilon();
  const torch::Tensor m_terms = (m0 * u.beta1).abs() + (gs * u.one_minus_beta1).abs();
  const torch::Tensor v_terms = (v0 * u.beta2).abs() + (gs * gs * u.one_minus_beta2).abs();
  const torch::Tensor p_terms = (p0 * u.decay).abs() + std::abs(u.step_size) * m_terms / denom;
  for (const auto& [ours, theirs, terms] : {std::tuple{p, p1, p_terms}, std::tuple{m, m1, m_terms}, std::tuple{v, v1, v_terms}}) {
    EXPECT_LE(((ours - theirs).abs() / terms).max().item<double>(), 4 * ulp);
  }
}

TEST(AdamW, TheGradientScaleIsAMultiplication) {
  Toy scaled(5), premultiplied(5);
  AdamW a(scaled.parameters, adam_config()), b(premultiplied.parameters, adam_config());
  const torch::Tensor scale = torch::scalar_tensor(0.25f);
  scaled.set_gradients(0), premultiplied.set_gradients(0);
  for (auto& p : premultiplied.parameters) p.tensor.mutable_grad().mul_(scale);
  a.step_on_device(1e-2, kApply, scale);
  b.step_on_device(1e-2, kApply, {});
  a.step_on_host(1e-2, true, 0.25);
  b.step_on_host(1e-2, true, 1.0);  // its gradients are the premultiplied ones
  for (size_t i = 0; i < scaled.parameters.size(); ++i) {
    EXPECT_TRUE(torch::equal(scaled.parameters[i].tensor, premultiplied.parameters[i].tensor)) << i;
  }
}

TEST(AdamW, OnTheHostASkippedStepIsNoStep) {
  Toy toy(4);
  AdamW adam(toy.parameters, adam_config());
  toy.set_gradients(0, std::nan(""));
  const auto before = toy.values();
  adam.step(1e-2, kSkip, {});  // a CPU flag: the host form
  for (size_t i = 0; i < before.size(); ++i) EXPECT_TRUE(torch::equal(before[i], toy.values()[i]));
  EXPECT_EQ(adam.applied_steps(), 0);
}

}  // namespace
}  // namespace vlm
