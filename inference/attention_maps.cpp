#include "inference/attention_maps.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace vlm {
namespace {

// [N] values of the kept tokens -> [rows, columns] on the full grid (0 where pruned).
torch::Tensor on_grid(const torch::Tensor& values, const torch::Tensor& kept, const ModelSpec& spec) {
  torch::Tensor grid = torch::zeros({spec.image_tokens()});  // on the host, where the PNG is drawn
  if (kept.defined()) {
    grid.index_copy_(0, kept.to(torch::kCPU), values.to(torch::kCPU, torch::kFloat));
  } else {
    grid.copy_(values);
  }
  return grid.view({spec.patch_rows(), spec.patch_columns()});
}

// Black -> red -> yellow -> white as v goes 0 -> 1.
void hot(float v, uint8_t* rgb) {
  const float channel[3] = {3 * v, 3 * v - 1, 3 * v - 2};
  for (int c = 0; c < 3; ++c) rgb[c] = static_cast<uint8_t>(std::lround(255 * std::clamp(channel[c], 0.0f, 1.0f)));
}

}  // namespace

AttentionTrace trace_attention(VlmModel& model, const torch::Tensor& image, const CaptionTokens& ids) {
  if (image.dim() != 4 || image.size(0) != 1) throw std::invalid_argument("trace_attention takes one image [1, C, H, W]");
  torch::NoGradGuard no_grad;
  const ModelSpec& spec = model->spec();
  DecodeState state = model->start_decoding(image);
  state.record_cross_attention = true;
  AttentionTrace trace;
  if (!state.image_kv.empty() && state.image_kv.front().log_gate.defined()) {
    trace.saliency = on_grid(state.image_kv.front().log_gate[0].exp(), state.kept_patches.defined() ? state.kept_patches[0] : torch::Tensor(), spec);
  }
  torch::Tensor token = torch::full({1}, ids.bos, torch::TensorOptions().dtype(torch::kLong).device(image.device()));
  for (int64_t position = 0; position + 1 < spec.max_tokens; ++position) {
    token = model->decode_step(token, position, &state).argmax(-1);
    trace.tokens.push_back(token.item<int64_t>());
    // The step that produced this token attended with the previous token as its query.
    trace.maps.push_back(on_grid(state.cross_attention.back()[0], state.kept_patches.defined() ? state.kept_patches[0] : torch::Tensor(), spec));
    if (trace.tokens.back() == ids.eos) break;
  }
  return trace;
}

Image heat_map(const torch::Tensor& image, const ImageFormat& format, const torch::Tensor& map, int scale) {
  if (scale < 1) throw std::invalid_argument("heat_map: scale must be at least 1");
  const torch::Tensor pixels = image.to(torch::kCPU, torch::kFloat).squeeze(0).contiguous();  // [C, H, W]
  const int channels = static_cast<int>(pixels.size(0)), height = static_cast<int>(pixels.size(1)),
            width = static_cast<int>(pixels.size(2));
  const torch::Tensor values = map.to(torch::kCPU, torch::kFloat).contiguous();
  const int rows = static_cast<int>(values.size(0)), columns = static_cast<int>(values.size(1));
  const float largest = std::max(values.max().item<float>(), 1e-12f);
  const float* p = pixels.data_ptr<float>();
  const float* v = values.data_ptr<float>();
  Image out;
  out.height = height * scale;
  out.width = width * scale;
  out.channels = 3;
  out.pixels.resize(static_cast<size_t>(out.height) * out.width * 3);
  for (int y = 0; y < out.height; ++y) {
    for (int x = 0; x < out.width; ++x) {
      const int sy = y / scale, sx = x / scale;
      float grey = 0;  // the mean over channels of the un-normalised pixel, in [0, 1]
      for (int c = 0; c < channels; ++c) {
        const float mean = format.mean.size() > 1 ? format.mean[c] : format.mean[0];
        const float std = format.std.size() > 1 ? format.std[c] : format.std[0];
        grey += (p[(static_cast<size_t>(c) * height + sy) * width + sx] * std + mean) / channels;
      }
      grey = std::clamp(grey, 0.0f, 1.0f);
      uint8_t heat[3];
      hot(v[(sy * rows / height) * columns + sx * columns / width] / largest, heat);
      uint8_t* o = &out.pixels[(static_cast<size_t>(y) * out.width + x) * 3];
      for (int c = 0; c < 3; ++c) o[c] = static_cast<uint8_t>(std::lround(0.5f * 255 * grey + 0.5f * heat[c]));
    }
  }
  return out;
}

}  // namespace vlm
