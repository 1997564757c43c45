#include "trainer/optimizer.h"

#include <cmath>

#include "trainer/fused_adamw.h"

namespace vlm {
namespace {

// Adam's bias corrections for update number `t` (1 for the first).
struct BiasCorrection {
  BiasCorrection(const OptimConfig& c, int64_t t)
      : first(1 - std::pow(c.beta1(), static_cast<double>(t))),
        sqrt_second(std::sqrt(1 - std::pow(c.beta2(), static_cast<double>(t)))) {}
  double first, sqrt_second;
};

}  // namespace

bool decays(const UniqueParameter& p) { return p.tensor.dim() >= 2 && p.name.find("_pos") == std::string::npos; }

std::vector<AdamWSegment> whole_parameters(const std::vector<UniqueParameter>& parameters) {
  std::vector<AdamWSegment> segments;
  for (const UniqueParameter& p : parameters) {
    TORCH_CHECK(p.tensor.is_contiguous(), p.name, ": not contiguous");
    segments.push_back({p.name, 0, p.tensor.detach().view({-1}), {}, p.tensor, decays(p)});
  }
  return segments;
}

AdamW::AdamW(std::vector<AdamWSegment> segments, const OptimConfig& config) : config_(config) {
  for (AdamWSegment& s : segments) {
    torch::Tensor exp_avg = torch::zeros_like(s.values), exp_avg_sq = torch::zeros_like(s.values);
    const double weight_decay = s.decays ? config.weight_decay() : 0.0;
    slots_.push_back({std::move(s), std::move(exp_avg), std::move(exp_avg_sq), weight_decay});
  }
}

torch::Tensor AdamW::Slot::gradient() const {
  return segment.gradient.defined() ? segment.gradient : segment.owner.grad().reshape({-1});
}

void AdamW::step(double lr, const torch::Tensor& apply, const torch::Tensor& grad_scale) {
  if (apply.device().is_cpu()) {
    step_on_host(lr, apply.item<bool>(), grad_scale.defined() ? grad_scale.item<double>() : 1.0);
  } else {
    step_on_device(lr, apply, grad_scale);
  }
}

void AdamW::step_on_host(double lr, bool apply, double grad_scale) {
  if (!apply) return;
  torch::NoGradGuard no_grad;
  const BiasCorrection bias(config_, applied_ + 1);
  AdamWUpdate u;
  u.grad_scale = static_cast<float>(grad_scale);
  u.beta1 = static_cast<float>(config_.beta1());
  u.one_minus_beta1 = static_cast<float>(1 - config_.beta1());
  u.beta2 = static_cast<float>(config_.beta2());
  u.one_minus_beta2 = static_cast<float>(1 - config_.beta2());
  u.sqrt_bias2 = static_cast<float>(bias.sqrt_second);
  u.eps = static_cast<float>(config_.eps());
  u.step_size = static_cast<float>(-lr / bias.first);
  for (Slot& s : slots_) {
    const torch::Tensor& p = s.segment.values;
    TORCH_CHECK(p.is_contiguous() && p.scalar_type() == torch::kFloat, s.segment.parameter, ": not contiguous float32");
    const torch::Tensor g = s.gradient().contiguous();  // a view into a reducer bucket: no copy
    u.decay = static_cast<float>(1 - lr * s.weight_decay);
    fused_adamw(p.data_ptr<float>(), g.data_ptr<float>(), s.exp_avg.data_ptr<float>(), s.exp_avg_sq.data_ptr<float>(),
                p.numel(), u);
  }
}

// Skipping multiplies by 1 and adds 0 (exactly), where an update multiplies
// by beta and adds (1 - beta) g: the factors are chosen on the device.
void AdamW::step_on_device(double lr, const torch::Tensor& apply, const torch::Tensor& grad_scale) {
  if (slots_.empty()) return;
  torch::NoGradGuard no_grad;
  const double beta1 = config_.beta1(), beta2 = config_.beta2();
  const BiasCorrection bias(config_, applied_ + 1);
  const torch::Tensor on = apply.to(slots_.front().segment.values.options());  // 1 or 0
  const torch::Tensor off = 1 - on;
  // Non-finite gradients meet a zero factor: 0 * NaN is NaN, so they are zeroed.
  const torch::Tensor gradient_factor = grad_scale.defined() ? grad_scale * on : on;
  const torch::Tensor keep1 = on * beta1 + off;  // beta1, or exactly 1 to skip
  const torch::Tensor keep2 = on * beta2 + off;
  const torch::Tensor step_size = on * (-lr / bias.first);
  for (Slot& s : slots_) {
    torch::Tensor& p = s.segment.values;
    const torch::Tensor g = s.gradient().mul(gradient_factor).nan_to_num_(0.0, 0.0, 0.0);
    if (s.weight_decay != 0) p.mul_(1 - on * (lr * s.weight_decay));
    s.exp_avg.mul_(keep1).add_(g, 1 - beta1);
    s.exp_avg_sq.mul_(keep2).addcmul_(g, g, 1 - beta2);
    const torch::Tensor denom = (s.exp_avg_sq.sqrt() / bias.sqrt_second).add_(config_.eps());
    p.addcdiv_(s.exp_avg * step_size, denom);
  }
}

std::vector<AdamState> AdamW::state() const {
  std::vector<AdamState> states;
  for (const Slot& s : slots_) states.push_back({s.segment.parameter, s.segment.start, applied_, s.exp_avg, s.exp_avg_sq});
  return states;
}

int64_t AdamW::state_bytes() const {
  int64_t bytes = 0;
  for (const Slot& s : slots_) bytes += s.exp_avg.nbytes() + s.exp_avg_sq.nbytes();
  return bytes;
}

}  // namespace vlm
