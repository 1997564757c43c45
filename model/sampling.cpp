#include "model/sampling.h"

#include <numeric>
#include <stdexcept>
#include <string>

namespace vlm {
namespace {

uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

constexpr double kAdaptiveSharpening = 1.2;  // the notes' factor
constexpr size_t kAdaptiveWindow = 5;        // the notes' window

}  // namespace

double uniform_draw(uint64_t seed, int64_t sample, int64_t position) {
  const uint64_t key = splitmix64(splitmix64(splitmix64(seed) ^ static_cast<uint64_t>(sample)) ^ static_cast<uint64_t>(position));
  return static_cast<double>(key >> 11) * 0x1.0p-53;  // 53 random bits
}

torch::Tensor pick_tokens(const torch::Tensor& logits, const Sampling& sampling, int64_t first_sample, int64_t position,
                          EntropyHistory* history) {
  if (sampling.greedy()) return logits.argmax(-1);
  if (sampling.temperature < 0 || sampling.top_k < 0 || !(sampling.top_p > 0 && sampling.top_p <= 1)) {
    throw std::invalid_argument("sampling: temperature >= 0, top_k >= 0 and 0 < top_p <= 1, not " +
                                std::to_string(sampling.temperature) + ", " + std::to_string(sampling.top_k) + ", " +
                                std::to_string(sampling.top_p));
  }
  const int64_t rows = logits.size(0), vocab = logits.size(1);
  const torch::Tensor scores = logits.to(torch::kFloat);
  std::vector<float> temperature(static_cast<size_t>(rows), static_cast<float>(sampling.temperature));
  if (sampling.adaptive_temperature) {
    const torch::Tensor log_p = scores.log_softmax(-1);
    const torch::Tensor entropy = -(log_p.exp() * log_p).sum(-1).to(torch::kDouble).cpu().contiguous();
    history->resize(static_cast<size_t>(rows));
    for (int64_t r = 0; r < rows; ++r) {
      std::vector<double>& seen = (*history)[static_cast<size_t>(r)];
      const double h = entropy.data_ptr<double>()[r];
      seen.push_back(h);
      const size_t window = std::min(seen.size(), kAdaptiveWindow);
      const double recent = std::accumulate(seen.end() - static_cast<std::ptrdiff_t>(window), seen.end(), 0.0) / static_cast<double>(window);
      if (h >= recent) temperature[static_cast<size_t>(r)] /= static_cast<float>(kAdaptiveSharpening);
    }
  }
  const torch::Tensor t = torch::tensor(temperature).to(scores.device()).unsqueeze(1);
  const auto [sorted, order] = (scores / t).softmax(-1).sort(-1, /*descending=*/true);
  // Kept: among the top k, and while the probability before a token is below top_p (the first is always kept).
  torch::Tensor keep = (sorted.cumsum(-1) - sorted) < sampling.top_p;
  if (sampling.top_k > 0 && sampling.top_k < vocab) keep.narrow(1, sampling.top_k, vocab - sampling.top_k).fill_(false);
  const torch::Tensor cdf = (sorted * keep).cumsum(-1);
  std::vector<double> draws(static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r) draws[static_cast<size_t>(r)] = uniform_draw(sampling.seed, first_sample + r, position);
  const torch::Tensor u = torch::tensor(draws).to(scores.device()).to(torch::kFloat).unsqueeze(1) * cdf.narrow(1, vocab - 1, 1);
  // The first kept token whose cumulative probability exceeds the draw (the
  // kept tokens are a prefix; a draw rounded up to the total takes the last).
  const torch::Tensor last_kept = keep.sum(-1, /*keepdim=*/true) - 1;
  const torch::Tensor choice = torch::minimum((cdf <= u).sum(-1, /*keepdim=*/true), last_kept);
  return order.gather(1, choice).squeeze(1);
}

}  // namespace vlm
