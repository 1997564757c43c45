#include "data/batch.h"

#include <algorithm>
#include <cstring>

#include "data/idx.h"

namespace vlm {
namespace {

// Fashion-MNIST pixel statistics over the train split.
constexpr float kMean = 0.2860f;
constexpr float kStd = 0.3530f;

}  // namespace

Batch make_batch(const Task& task, const Tokenizer& tokenizer, const std::vector<Sample>& samples,
                 int64_t max_tokens, bool pinned) {
  const int64_t b = static_cast<int64_t>(samples.size()), side = kFashionSide, width = task.image_width();
  const auto host = torch::TensorOptions().pinned_memory(pinned);
  Batch batch{torch::full({b, 1, side, width}, -kMean / kStd, host.dtype(torch::kFloat)),
              torch::full({b, max_tokens}, WordTokenizer::kPad, host.dtype(torch::kLong)),
              torch::empty({b}, host.dtype(torch::kLong))};
  const uint8_t* pixels = task.split().images.data_ptr<uint8_t>();
  float* image = batch.images.data_ptr<float>();
  int64_t* tokens = batch.tokens.data_ptr<int64_t>();
  int64_t* lengths = batch.lengths.data_ptr<int64_t>();
  for (int64_t i = 0; i < b; ++i) {
    const Sample& s = samples[i];
    for (int slot = 0; slot < 2; ++slot) {
      const int64_t item = slot == 0 ? s.left : s.right;
      if (item < 0) continue;
      const uint8_t* src = pixels + item * side * side;
      for (int64_t y = 0; y < side; ++y) {
        float* row = image + (i * side + y) * width + slot * side;
        for (int64_t x = 0; x < side; ++x) row[x] = (src[y * side + x] / 255.0f - kMean) / kStd;
      }
    }
    const std::vector<int64_t> ids = tokenizer.encode(s.caption);
    if (static_cast<int64_t>(ids.size()) > max_tokens) {
      throw DataError("caption '" + s.caption + "' needs " + std::to_string(ids.size()) +
                      " tokens but model.text.max_tokens is " + std::to_string(max_tokens) +
                      "; raise model.text.max_tokens");
    }
    std::memcpy(tokens + i * max_tokens, ids.data(), ids.size() * sizeof(int64_t));
    lengths[i] = static_cast<int64_t>(ids.size());
  }
  return batch;
}

Batch to_device(const Batch& batch, const torch::Device& device) {
  if (device.is_cpu()) return batch;
  const bool non_blocking = true;
  return {batch.images.to(device, non_blocking), batch.tokens.to(device, non_blocking),
          batch.lengths.to(device, non_blocking)};
}

Batch without_padding(const Batch& batch, int64_t width) {
  const int64_t padded = batch.tokens.size(1);
  if (batch.size() == 0) return batch;
  const int64_t longest = batch.lengths.max().item<int64_t>();
  const int64_t cut = std::min(padded, width > 0 ? width : longest);
  if (cut == padded) return batch;
  torch::Tensor tokens = torch::empty({batch.size(), cut}, batch.tokens.options().pinned_memory(batch.tokens.is_pinned()));
  tokens.copy_(batch.tokens.narrow(1, 0, cut));
  if (longest <= cut) return {batch.images, tokens, batch.lengths};
  torch::Tensor lengths = batch.lengths.clone();
  int64_t* length = lengths.data_ptr<int64_t>();
  for (int64_t i = 0; i < batch.size(); ++i) {
    if (length[i] <= cut) continue;
    length[i] = cut;
    tokens[i][cut - 1] = WordTokenizer::kEos;  // <eos> kept last
  }
  return {batch.images, tokens, lengths};
}

std::vector<int64_t> encode_truncated(const Tokenizer& tokenizer, const std::string& caption, int64_t max_tokens) {
  std::vector<int64_t> ids = tokenizer.encode(caption);
  if (static_cast<int64_t>(ids.size()) > max_tokens) {
    ids.resize(static_cast<size_t>(max_tokens));
    ids.back() = WordTokenizer::kEos;
  }
  return ids;
}

std::pair<torch::Tensor, torch::Tensor> tokenize(const Tokenizer& tokenizer, const std::vector<std::string>& texts,
                                                 int64_t max_tokens) {
  const int64_t n = static_cast<int64_t>(texts.size());
  std::vector<std::vector<int64_t>> rows;
  size_t longest = 0;
  for (const std::string& text : texts) {
    rows.push_back(encode_truncated(tokenizer, text, max_tokens));
    longest = std::max(longest, rows.back().size());
  }
  torch::Tensor tokens = torch::full({n, static_cast<int64_t>(longest)}, Tokenizer::kPad, torch::kLong);
  torch::Tensor lengths = torch::empty({n}, torch::kLong);
  for (int64_t i = 0; i < n; ++i) {
    const std::vector<int64_t>& ids = rows[static_cast<size_t>(i)];
    std::copy(ids.begin(), ids.end(), tokens[i].data_ptr<int64_t>());
    lengths[i] = static_cast<int64_t>(ids.size());
  }
  return {tokens, lengths};
}

}  // namespace vlm
