#pragma once
// Saliency-gated attention (model.saliency; the Open-AutoGLM notes in the
// seeds): a light convolutional head predicts how much each patch matters,
// s in [0, 1] per patch, and attention logits toward patch j get + log(s_j),
// added as every logit bias is, before the 1/sqrt(head_dim) scale: the
// weight of patch j is scaled by s_j^(1/sqrt(head_dim)) before the softmax
// renormalises. s_j = 1 leaves attention as it was; s_j = 0 removes patch j
// entirely.

#include <torch/torch.h>

#include "model/spec.h"

namespace vlm {

// 3x3 conv to spec.saliency_channels maps, GELU, the mean over each patch,
// a 1x1 conv to one score per patch: images [B, C, H, W] -> log s [B, N].
struct SaliencyHeadImpl : torch::nn::Module {
  explicit SaliencyHeadImpl(const ModelSpec& spec);
  // log s = log-sigmoid(score): finite, and stable where s is tiny.
  torch::Tensor log_map(const torch::Tensor& images);

  int64_t patch_size;
  torch::nn::Conv2d features{nullptr}, score{nullptr};
};
TORCH_MODULE(SaliencyHead);

// log_gate [b, T] as a logit bias toward each key: [b, 1, 1, T].
inline torch::Tensor key_bias(const torch::Tensor& log_gate) {
  return log_gate.view({log_gate.size(0), 1, 1, log_gate.size(1)});
}

}  // namespace vlm
