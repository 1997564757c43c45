// Head importance and head pruning (model/head_pruning.h): a head's score is
// the gradient of the loss with respect to a gate on it, and removing a head
// physically gives the model in which that head is gated to zero in every
// layer of its sharing group.

#include <gtest/gtest.h>

#include <cmath>

#include "model/head_pruning.h"
#include "model/kv_cache_layout.h"
#include "model/parameters.h"
#include "proto/config.pb.h"
#include "tests/small_model.h"

namespace vlm {
namespace {

// 4 heads per set, and the position bias: every kind of head-sized tensor.
ModelSpec pruning_spec() {
  ModelSpec s = small_spec(/*heads=*/4);
  s.vision_relative_bias = true;
  return s;
}

// A trained-looking model: random weights everywhere, the position bias included.
VlmModel random_model(const ModelSpec& s, uint64_t seed) {
  torch::manual_seed(seed);
  VlmModel model(s);
  torch::NoGradGuard no_grad;
  for (auto& p : model->parameters()) p.add_(torch::randn_like(p) * 0.1);
  return model;
}

double loss_of(VlmModel& model, const StageInputs& in) {
  return model->forward(in).weighted_loss(model->spec()).item<double>();
}

// Gates of ones, with `value` at head `head` of set `set`.
std::vector<torch::Tensor> gates_with(const std::vector<HeadSet>& sets, int64_t batch, size_t set, int64_t head,
                                      double value, torch::Dtype dtype) {
  std::vector<torch::Tensor> gates;
  for (const HeadSet& s : sets) gates.push_back(torch::ones({batch, s.heads, 1, 1}, dtype));
  gates[set].index_put_({torch::indexing::Slice(), head}, value);
  return gates;
}

TEST(HeadPruning, ASetPerSharingGroupWithEveryLayerOfIt) {
  ModelSpec s = pruning_spec();
  s.multimodal_layers = 3;
  s.cross_kv_share = 2;  // cross groups: layers {0, 1} and {2}, text blocks 1, 2 and 3
  const std::vector<HeadSet> sets = head_sets(s);
  ASSERT_EQ(sets.size(), 4u);
  EXPECT_EQ(sets[0].kind, AttentionKind::kVisionSelf);
  EXPECT_EQ(sets[0].blocks, (std::vector<int64_t>{0, 1}));
  EXPECT_EQ(sets[1].blocks, (std::vector<int64_t>{0, 1, 2, 3}));
  EXPECT_EQ(sets[2].kind, AttentionKind::kCross);
  EXPECT_EQ(sets[2].blocks, (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(sets[3].blocks, (std::vector<int64_t>{3}));
  EXPECT_EQ(sets[3].name(), "cross-attention group 1");
}

TEST(HeadPruning, AHeadsScoreIsTheLossGradientOfAGateOnItInEveryLayerOfItsGroup) {
  const ModelSpec s = pruning_spec();
  VlmModel model = random_model(s, 1);
  // Finite differences need the precision. Module::to(dtype) would convert the
  // integer and bool buffers too (position index, causal mask): parameters only.
  for (auto& p : model->parameters()) p.set_data(p.to(torch::kDouble));
  const StageInputs in = random_inputs(s, 1, 2, torch::kDouble);  // one sample: the score is |dL/dxi|
  const HeadScores scores = score_heads(model, {in});
  ASSERT_EQ(scores.sets.size(), 3u);
  const double eps = 1e-5;
  for (size_t set = 0; set < scores.sets.size(); ++set) {
    for (int64_t h = 0; h < s.heads; ++h) {
      set_head_gates(model, gates_with(scores.sets, 1, set, h, 1 + eps, torch::kDouble));
      const double up = loss_of(model, in);
      set_head_gates(model, gates_with(scores.sets, 1, set, h, 1 - eps, torch::kDouble));
      const double down = loss_of(model, in);
      set_head_gates(model, {});
      const double slope = std::abs(up - down) / (2 * eps);
      EXPECT_NEAR(scores.scores[set][static_cast<size_t>(h)], slope, 1e-6 * std::max(1.0, slope))
          << scores.sets[set].name() << " head " << h;
      EXPECT_GT(slope, 0) << scores.sets[set].name() << " head " << h << " has no effect on the loss";
    }
  }
  for (const auto& p : model->parameters()) EXPECT_FALSE(p.grad().defined()) << "scoring must leave .grad alone";
}

TEST(HeadPruning, KeepingEveryHeadIsTheSameModel) {
  const ModelSpec s = pruning_spec();
  VlmModel model = random_model(s, 3);
  ModelConfig config;
  const std::vector<int64_t> all{0, 1, 2, 3};
  VlmModel same = prune_heads(model, {all, all, all}, &config);
  const StageInputs in = random_inputs(s, 3, 4);
  EXPECT_TRUE(torch::equal(model->forward(in).weighted_loss(s), same->forward(in).weighted_loss(s)));
  EXPECT_EQ(config.kept_heads().vision(0), 4);
}

TEST(HeadPruning, ARemovedHeadIsTheHeadGatedToZeroInEveryLayerOfItsGroup) {
  const ModelSpec s = pruning_spec();
  VlmModel model = random_model(s, 5);
  const StageInputs in = random_inputs(s, 3, 6);
  const std::vector<HeadSet> sets = head_sets(s);
  const std::vector<int64_t> all{0, 1, 2, 3};
  for (size_t set = 0; set < sets.size(); ++set) {
    std::vector<std::vector<int64_t>> keep(sets.size(), all);
    keep[set] = {0, 2, 3};  // head 1 goes
    ModelConfig config;
    VlmModel pruned = prune_heads(model, keep, &config);
    set_head_gates(model, gates_with(sets, 3, set, 1, 0.0, torch::kFloat));
    const double gated = loss_of(model, in);
    set_head_gates(model, {});
    EXPECT_NEAR(loss_of(pruned, in), gated, 1e-5) << sets[set].name();
    EXPECT_NE(loss_of(model, in), gated) << sets[set].name() << ": head 1 should matter";
    // Smaller projections, not masks: a quarter of the set's head-sized rows and columns is gone.
    const int64_t dh = s.head_dim(), d = s.d_model, cells = (2 * s.patch_rows() - 1) * (2 * s.patch_columns() - 1);
    const int64_t gone = sets[set].kind == AttentionKind::kVisionSelf ? 4 * dh * d + cells  // W_q, W_k, W_v, W_o; bias table
                         : sets[set].kind == AttentionKind::kTextSelf ? 4 * dh * d
                                                                       : 2 * dh * d + 2 * (2 * dh * d + dh);  // W_k, W_v; W_q (+bias), W_o per layer
    EXPECT_EQ(unique_parameter_count(*model) - unique_parameter_count(*pruned), gone) << sets[set].name();
    const int64_t kv = kv_cache_layout(s).bytes_per_image(), pruned_kv = kv_cache_layout(pruned->spec()).bytes_per_image();
    EXPECT_EQ(pruned_kv, sets[set].kind == AttentionKind::kCross ? kv * 3 / 4 : kv) << sets[set].name();
  }
}

TEST(HeadPruning, TheLowestScoringHeadsGoAndEverySetKeepsOne) {
  HeadScores scores;
  scores.sets = head_sets(pruning_spec());
  scores.scores = {{0.5, 0.1, 0.2, 0.9}, {0.05, 0.04, 0.03, 0.02}, {1.0, 2.0, 3.0, 4.0}};
  EXPECT_EQ(heads_to_keep(scores, 2), (std::vector<std::vector<int64_t>>{{0, 1, 2, 3}, {0, 1}, {0, 1, 2, 3}}));
  // The text set's last head stays; the next lowest are vision's heads 1 and 2.
  EXPECT_EQ(heads_to_keep(scores, 5), (std::vector<std::vector<int64_t>>{{0, 3}, {0}, {0, 1, 2, 3}}));
  EXPECT_THROW(heads_to_keep(scores, 10), std::invalid_argument);
}

}  // namespace
}  // namespace vlm
