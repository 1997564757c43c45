#include "model/conv_stem.h"

#include <algorithm>
#include <string>

namespace vlm {
namespace {

torch::nn::Conv2d same_conv(int64_t in, int64_t out, int64_t kernel, bool bias = true) {
  return torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, kernel).padding(kernel / 2).bias(bias));
}

}  // namespace

CbamImpl::CbamImpl(int64_t channels, int64_t reduction) {
  const int64_t hidden = std::max<int64_t>(1, channels / reduction);
  mlp_in = register_module("mlp_in", Linear(channels, hidden));
  mlp_out = register_module("mlp_out", Linear(hidden, channels));
  spatial = register_module("spatial", same_conv(2, 1, 7));
}

torch::Tensor CbamImpl::channel_map(const torch::Tensor& x) {
  auto mlp = [this](const torch::Tensor& d) { return mlp_out->forward(torch::relu(mlp_in->forward(d))); };
  const torch::Tensor average = x.mean({2, 3}), maximum = x.amax({2, 3});
  return torch::sigmoid(mlp(average) + mlp(maximum)).unsqueeze(-1).unsqueeze(-1);
}

torch::Tensor CbamImpl::spatial_map(const torch::Tensor& x) {
  const torch::Tensor pooled = torch::cat({x.mean(1, /*keepdim=*/true), x.amax(1, /*keepdim=*/true)}, 1);
  return torch::sigmoid(spatial->forward(pooled));
}

torch::Tensor CbamImpl::forward(const torch::Tensor& x) {
  const torch::Tensor refined = x * channel_map(x);
  return refined * spatial_map(refined);
}

// The convolutions keep LibTorch's default (Kaiming-uniform) initialisation:
// VlmModel's N(0, 0.02) suits wide matrices, not a 3x3 kernel over one channel.
ConvStemImpl::ConvStemImpl(const ModelSpec& spec) {
  const int64_t c = spec.stem_channels;
  input = register_module("input", same_conv(spec.image_channels, c, 3));
  for (int64_t b = 0; b < spec.stem_blocks; ++b) {
    convs.push_back(register_module("conv_" + std::to_string(b), same_conv(c, c, 3)));
    if (spec.stem_cbam) attention.push_back(register_module("cbam_" + std::to_string(b), Cbam(c, spec.cbam_reduction)));
  }
}

torch::Tensor ConvStemImpl::forward(const torch::Tensor& images) {
  torch::Tensor x = torch::gelu(input->forward(images));
  for (size_t b = 0; b < convs.size(); ++b) {
    torch::Tensor y = torch::gelu(convs[b]->forward(x));
    if (!attention.empty()) y = attention[b]->forward(y);
    x = x + y;
  }
  return x;
}

}  // namespace vlm
