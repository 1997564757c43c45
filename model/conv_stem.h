#pragma once
// The optional convolutional stem (model.vision.conv_stem): convolutions over
// the image before it is cut into patches, with CBAM's channel and spatial
// attention (Woo et al., 2018; the YOLOv8 mixed-attention article in the
// seeds). See docs/model.md.

#include <torch/torch.h>

#include <vector>

#include "model/linear.h"
#include "model/spec.h"

namespace vlm {

// CBAM: channel attention, then spatial attention, applied in series.
struct CbamImpl : torch::nn::Module {
  CbamImpl(int64_t channels, int64_t reduction);
  // x [B, C, H, W] -> x * channel map, then * spatial map.
  torch::Tensor forward(const torch::Tensor& x);
  // sigmoid(MLP(avg-pool x) + MLP(max-pool x)): [B, C, 1, 1] in [0, 1].
  torch::Tensor channel_map(const torch::Tensor& x);
  // sigmoid(conv7x7([mean over channels; max over channels])): [B, 1, H, W] in [0, 1].
  torch::Tensor spatial_map(const torch::Tensor& x);

  Linear mlp_in{nullptr}, mlp_out{nullptr};  // shared by both pooled descriptors
  torch::nn::Conv2d spatial{nullptr};
};
TORCH_MODULE(Cbam);

// A 3x3 conv from the image's channels to spec.stem_channels, GELU, then
// spec.stem_blocks residual blocks x + CBAM(GELU(conv3x3(x))). Keeps the
// height and width: [B, C_image, H, W] -> [B, stem_channels, H, W].
struct ConvStemImpl : torch::nn::Module {
  explicit ConvStemImpl(const ModelSpec& spec);
  torch::Tensor forward(const torch::Tensor& images);

  torch::nn::Conv2d input{nullptr};
  std::vector<torch::nn::Conv2d> convs;
  std::vector<Cbam> attention;  // empty without CBAM
};
TORCH_MODULE(ConvStem);

}  // namespace vlm
