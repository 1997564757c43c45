// Caption decoding by sampling (model/sampling.h): the filters keep what they
// say, draws follow the tempered distribution, a draw depends on its sample's
// index and not on its batch, and the adaptive temperature sharpens the steps
// the notes' rule names.

#include <gtest/gtest.h>

#include <cmath>

#include "model/caption.h"
#include "model/sampling.h"

namespace vlm {
namespace {

Sampling sampled(double temperature, int64_t top_k = 0, double top_p = 1, bool adaptive = false) {
  Sampling s;
  s.temperature = temperature, s.top_k = top_k, s.top_p = top_p, s.adaptive_temperature = adaptive, s.seed = 11;
  return s;
}

// Frequencies of each token over `rows` draws of the same logits (one draw per sample index).
std::vector<double> frequencies(const std::vector<double>& probabilities, const Sampling& s, int64_t rows = 40000) {
  const torch::Tensor logits = torch::tensor(probabilities).log().to(torch::kFloat).unsqueeze(0).expand({rows, -1}).contiguous();
  EntropyHistory history;
  const torch::Tensor picks = pick_tokens(logits, s, 0, 1, &history);
  const torch::Tensor counts = torch::bincount(picks, {}, static_cast<int64_t>(probabilities.size())).to(torch::kDouble) / rows;
  return std::vector<double>(counts.data_ptr<double>(), counts.data_ptr<double>() + counts.numel());
}

// p^(1/t), normalised, with the entries past `keep` zeroed.
std::vector<double> expected(const std::vector<double>& p, double t, size_t keep) {
  std::vector<double> q(p.size(), 0);
  double total = 0;
  for (size_t i = 0; i < keep; ++i) total += q[i] = std::pow(p[i], 1 / t);
  for (double& x : q) x /= total;
  return q;
}

void expect_near(const std::vector<double>& got, const std::vector<double>& want, const char* what) {
  // 40,000 draws: a frequency's standard deviation is at most 0.0025; 0.012 is ~5 of them.
  for (size_t i = 0; i < want.size(); ++i) EXPECT_NEAR(got[i], want[i], 0.012) << what << ", token " << i;
}

const std::vector<double> kProbabilities = {0.5, 0.3, 0.15, 0.05};  // already sorted

TEST(Sampling, DrawsFollowTheTemperedDistribution) {
  expect_near(frequencies(kProbabilities, sampled(1)), expected(kProbabilities, 1, 4), "T=1");
  expect_near(frequencies(kProbabilities, sampled(0.5)), expected(kProbabilities, 0.5, 4), "T=0.5");
  expect_near(frequencies(kProbabilities, sampled(2)), expected(kProbabilities, 2, 4), "T=2");
}

TEST(Sampling, TopKAndTopPKeepOnlyTheirTokens) {
  expect_near(frequencies(kProbabilities, sampled(1, 2)), expected(kProbabilities, 1, 2), "top-k 2");
  // The probability before token 2 is 0.8 >= 0.7: tokens 0 and 1 are kept.
  expect_near(frequencies(kProbabilities, sampled(1, 0, 0.7)), expected(kProbabilities, 1, 2), "top-p 0.7");
  expect_near(frequencies(kProbabilities, sampled(1, 0, 0.81)), expected(kProbabilities, 1, 3), "top-p 0.81");
}

TEST(Sampling, TopKOfOneAndATinyTopPAreGreedy) {
  torch::manual_seed(3);
  const torch::Tensor logits = torch::randn({64, 50});
  const torch::Tensor greedy = logits.argmax(-1);
  EntropyHistory history;
  EXPECT_TRUE(torch::equal(pick_tokens(logits, Sampling{}, 0, 1, &history), greedy));
  EXPECT_TRUE(torch::equal(pick_tokens(logits, sampled(3, 1), 0, 1, &history), greedy));
  EXPECT_TRUE(torch::equal(pick_tokens(logits, sampled(3, 0, 1e-6), 0, 1, &history), greedy));
}

TEST(Sampling, ADrawDependsOnItsSampleNotItsBatch) {
  torch::manual_seed(4);
  const torch::Tensor logits = torch::randn({8, 30});
  EntropyHistory whole, part;
  const torch::Tensor together = pick_tokens(logits, sampled(1.5), 100, 3, &whole);
  const torch::Tensor alone = pick_tokens(logits.narrow(0, 5, 3), sampled(1.5), 105, 3, &part);
  EXPECT_TRUE(torch::equal(together.narrow(0, 5, 3), alone));
  // Another position or seed draws anew.
  EXPECT_NE(uniform_draw(11, 105, 3), uniform_draw(12, 105, 3));
  EXPECT_NE(uniform_draw(11, 105, 3), uniform_draw(11, 105, 4));
}

// A caption's first step always meets the rule (its entropy is its own mean):
// temperature / 1.2. A step more certain than the recent ones is not sharpened.
TEST(Sampling, AdaptiveTemperatureSharpensTheStepsTheRuleNames) {
  expect_near(frequencies(kProbabilities, sampled(1, 0, 1, true)), expected(kProbabilities, 1 / 1.2, 4), "first step");
  const int64_t rows = 40000;
  const torch::Tensor flat = torch::zeros({rows, 4});  // entropy log 4: the most uncertain
  const torch::Tensor sure = torch::tensor(kProbabilities).log().to(torch::kFloat).unsqueeze(0).expand({rows, -1}).contiguous();
  EntropyHistory history;
  pick_tokens(flat, sampled(1, 0, 1, true), 0, 1, &history);
  const torch::Tensor picks = pick_tokens(sure, sampled(1, 0, 1, true), 0, 2, &history);
  const torch::Tensor counts = torch::bincount(picks, {}, 4).to(torch::kDouble) / rows;
  expect_near(std::vector<double>(counts.data_ptr<double>(), counts.data_ptr<double>() + 4), expected(kProbabilities, 1, 4),
              "a more certain second step");
  EXPECT_EQ(history.size(), static_cast<size_t>(rows));
  EXPECT_EQ(history.front().size(), 2u);
}

}  // namespace
}  // namespace vlm
