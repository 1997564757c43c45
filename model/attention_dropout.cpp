#include "model/attention_dropout.h"

#include <limits>

namespace vlm {
namespace {

constexpr int64_t kPrime = 2147483647;  // 2^31 - 1: products of two residues fit in int64

uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// Kinds of mask, part of the salt.
enum MaskKind : int64_t { kSelfWeights, kSelfHeads, kCrossWeights, kCrossHeads, kTokens, kKinds };

torch::Tensor scaled_keep(const torch::Tensor& uniform, double p) {
  return (uniform >= p).to(torch::kFloat) * static_cast<float>(1.0 / (1.0 - p));
}

}  // namespace

torch::Tensor dropout_keys(uint64_t seed, int64_t step, const std::vector<int64_t>& positions,
                           const torch::Device& device) {
  std::vector<int64_t> keys;
  keys.reserve(positions.size());
  const uint64_t per_step = splitmix64(splitmix64(seed) ^ static_cast<uint64_t>(step));
  for (int64_t position : positions) {
    keys.push_back(static_cast<int64_t>(splitmix64(per_step ^ static_cast<uint64_t>(position)) % kPrime));
  }
  return torch::tensor(keys, torch::kLong).to(device);
}

torch::Tensor keyed_uniform(const torch::Tensor& keys, int64_t salt, at::IntArrayRef shape) {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  const int64_t b = keys.size(0);
  // Residues mod 2^31 - 1 stay below 2^31, so x * 48271 and x * 69621 stay below 2^48.
  torch::Tensor x = (keys.view({b, 1}) + (salt % kPrime) * 16807) % kPrime;
  x = (x + torch::arange(n, keys.options()).view({1, n}) * 40503) % kPrime;
  for (int round = 0; round < 3; ++round) {
    x = (x * 48271 + 12345) % kPrime;
    x = torch::bitwise_xor(x, x.div(1 << 13, "floor"));  // mix the high bits into the low ones
    x = (x * 69621) % kPrime;
  }
  std::vector<int64_t> full{b};
  full.insert(full.end(), shape.begin(), shape.end());
  return (x.to(torch::kDouble) / static_cast<double>(kPrime)).to(torch::kFloat).view(full);
}

DropoutDraw::DropoutDraw(const ModelSpec& spec, const torch::Tensor& k, int64_t l)
    : keys(spec.has_dropout() ? k : torch::Tensor()),
      attention(spec.attention_dropout),
      head(spec.head_dropout),
      token(spec.token_dropout),
      layer(l) {}

torch::Tensor DropoutDraw::weight_keep(bool cross, int64_t heads, int64_t tq, int64_t tk) const {
  if (!active() || (attention == 0 && head == 0)) return {};
  const int64_t salt = layer * kKinds;
  torch::Tensor keep;
  if (attention > 0) {
    keep = scaled_keep(keyed_uniform(keys, salt + (cross ? kCrossWeights : kSelfWeights), {heads, tq, tk}), attention);
  }
  if (head > 0) {
    const torch::Tensor heads_kept =
        scaled_keep(keyed_uniform(keys, salt + (cross ? kCrossHeads : kSelfHeads), {heads, 1, 1}), head);
    keep = keep.defined() ? keep * heads_kept : heads_kept;
  }
  return keep;
}

torch::Tensor DropoutDraw::token_bias(int64_t tokens) const {
  if (!active() || token == 0) return {};
  const torch::Tensor u = keyed_uniform(keys, layer * kKinds + kTokens, {1, 1, tokens});
  // The token with the largest draw always stays: a row with no visible key has no softmax.
  const torch::Tensor visible = (u >= token).logical_or(u == u.amax(-1, /*keepdim=*/true));
  return torch::zeros_like(u).masked_fill_(visible.logical_not(), -std::numeric_limits<float>::infinity());
}

}  // namespace vlm
