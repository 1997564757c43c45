#pragma once
// Where the model looks (vlm-attn): for each token of an image's greedy
// caption, the cross-attention it paid to each patch, as a heat map over the
// image; and the saliency map when the model gates attention by one.

#include <torch/torch.h>

#include <vector>

#include "data/image.h"
#include "data/preprocess.h"
#include "model/caption.h"
#include "model/vlm.h"

namespace vlm {

struct AttentionTrace {
  std::vector<int64_t> tokens;      // the caption after <bos>, up to and including <eos>
  std::vector<torch::Tensor> maps;  // per token: [rows, columns] on the patch grid, summing to 1
  torch::Tensor saliency;           // [rows, columns] in [0, 1], or undefined without gating
};

// Greedy, KV-cached decoding of one image [1, C, H, W] that records, for each
// generated token, the cross-attention its step paid to the image tokens
// (mean over heads and multimodal layers). Patches removed by visual-token
// pruning get 0.
AttentionTrace trace_attention(VlmModel& model, const torch::Tensor& image, const CaptionTokens& ids);

// The image (normalised as the model reads it; un-normalised with `format`)
// enlarged `scale` times, in grey, under `map` [rows, columns] as a heat
// overlay: each patch coloured by its value / the map's largest (black, red,
// yellow, white), blended half and half. RGB, H*scale x W*scale.
Image heat_map(const torch::Tensor& image, const ImageFormat& format, const torch::Tensor& map, int scale);

}  // namespace vlm
