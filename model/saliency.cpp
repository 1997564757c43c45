#include "model/saliency.h"

namespace vlm {

// LibTorch's default (Kaiming-uniform) initialisation, as the conv stem's;
// the score's bias starts at 3 (s ~ 0.95 everywhere): training starts near
// the ungated model and learns where to look.
SaliencyHeadImpl::SaliencyHeadImpl(const ModelSpec& spec) : patch_size(spec.patch_size) {
  const int64_t c = spec.saliency_channels;
  features = register_module(
      "features", torch::nn::Conv2d(torch::nn::Conv2dOptions(spec.image_channels, c, 3).padding(1)));
  score = register_module("score", torch::nn::Conv2d(torch::nn::Conv2dOptions(c, 1, 1)));
  torch::NoGradGuard no_grad;
  score->bias.fill_(3.0);
}

torch::Tensor SaliencyHeadImpl::log_map(const torch::Tensor& images) {
  const torch::Tensor pooled = torch::avg_pool2d(torch::gelu(features->forward(images)), patch_size);
  const torch::Tensor logits = score->forward(pooled);  // [B, 1, rows, cols]: patches in row-major order
  return torch::log_sigmoid(logits).flatten(1);
}

}  // namespace vlm
