// The attention toolbox's defining properties (docs/model.md): the CBAM conv
// stem, keyed attention/head/token dropout, activation checkpointing.

#include <gtest/gtest.h>

#include <limits>
#include <map>

#include "model/attention_dropout.h"
#include "model/conv_stem.h"
#include "model/kv_cache_layout.h"
#include "model/parameters.h"
#include "model/vlm.h"
#include "tests/small_model.h"

namespace vlm {
namespace {

std::vector<int64_t> range(int64_t n) {
  std::vector<int64_t> r(n);
  for (int64_t i = 0; i < n; ++i) r[i] = i;
  return r;
}

bool in_unit_range(const torch::Tensor& t) { return t.min().item<float>() >= 0 && t.max().item<float>() <= 1; }

TEST(ConvStem, CbamMapsAreInUnitRangeAndFollowTheInput) {
  torch::manual_seed(3);
  Cbam cbam(8, 4);
  const torch::Tensor a = torch::randn({2, 8, 28, 56}), b = torch::randn({2, 8, 28, 56});
  const torch::Tensor channel = cbam->channel_map(a), spatial = cbam->spatial_map(a);
  EXPECT_EQ(channel.sizes(), (std::vector<int64_t>{2, 8, 1, 1}));
  EXPECT_EQ(spatial.sizes(), (std::vector<int64_t>{2, 1, 28, 56}));
  EXPECT_TRUE(in_unit_range(channel) && in_unit_range(spatial));
  EXPECT_FALSE(torch::equal(channel, cbam->channel_map(b)));
  EXPECT_FALSE(torch::equal(spatial, cbam->spatial_map(b)));
  EXPECT_GT(spatial.std().item<float>(), 0) << "the spatial map must vary over the image";
  EXPECT_EQ(cbam->forward(a).sizes(), a.sizes());
}

TEST(ConvStem, PatchesAreCutFromTheStemsMaps) {
  ModelSpec s = small_spec();
  s.stem_channels = 8;
  s.stem_blocks = 2;
  s.cbam_reduction = 2;  // 4 hidden units: one alone may be a dead ReLU for every sample
  ConvStem stem(s);
  const StageInputs in = random_inputs(s, 3, 1);
  EXPECT_EQ(stem->forward(in.images).sizes(), (std::vector<int64_t>{3, 8, 28, 56}));
  EXPECT_EQ(stem->attention.size(), 2u);
  VlmModel model(s);
  EXPECT_EQ(s.patch_values(), 8 * 7 * 7);
  EXPECT_EQ(model->encode_image(in.images).sizes(), (std::vector<int64_t>{3, s.image_tokens(), s.d_model}));
  const StageOutput out = model->forward(in);
  out.weighted_loss(s).backward();
  for (const auto& p : unique_parameters(*model)) {
    if (p.name.rfind("conv_stem.", 0) == 0) {
      ASSERT_TRUE(p.tensor.grad().defined()) << p.name;
      EXPECT_GT(p.tensor.grad().abs().sum().item<double>(), 0) << p.name << " gets no gradient";
    }
  }
}

// Note [Keyed dropout]: element e of a sample's mask is a function of (key, salt, e) alone.
TEST(KeyedDropout, DrawsDependOnlyOnKeySaltAndElement) {
  const torch::Tensor keys = dropout_keys(1234, 5, {0, 1, 2, 3}, torch::kCPU);
  const torch::Tensor u = keyed_uniform(keys, 7, {3, 4});
  EXPECT_TRUE(torch::equal(keyed_uniform(keys.flip(0), 7, {3, 4}), u.flip(0))) << "a draw moved with its batch place";
  EXPECT_TRUE(torch::equal(keyed_uniform(keys.narrow(0, 2, 1), 7, {3, 4}), u.narrow(0, 2, 1)));
  EXPECT_FALSE(torch::equal(keyed_uniform(keys, 8, {3, 4}), u)) << "another salt, the same draws";
  EXPECT_FALSE(torch::equal(dropout_keys(1234, 6, {0, 1, 2, 3}, torch::kCPU), keys)) << "another step, the same keys";
  EXPECT_FALSE(torch::equal(dropout_keys(1235, 5, {0, 1, 2, 3}, torch::kCPU), keys)) << "another seed, the same keys";
}

TEST(KeyedDropout, DrawsAreUniformAndUncorrelated) {
  const torch::Tensor u = keyed_uniform(dropout_keys(1, 0, range(64), torch::kCPU), 3, {4, 32, 32}).reshape({-1});
  EXPECT_TRUE(in_unit_range(u));
  EXPECT_LT(u.max().item<float>(), 1.0f);
  EXPECT_NEAR(u.mean().item<double>(), 0.5, 0.005);
  EXPECT_NEAR((u < 0.2).to(torch::kDouble).mean().item<double>(), 0.2, 0.005);
  const torch::Tensor a = u.narrow(0, 0, u.numel() - 1) - 0.5, b = u.narrow(0, 1, u.numel() - 1) - 0.5;
  EXPECT_LT(std::abs((a * b).mean().item<double>() / (1.0 / 12)), 0.01) << "neighbouring draws are correlated";
}

TEST(KeyedDropout, HeadDropoutDropsWholeHeadsAndTokenDropoutKeepsOneToken) {
  ModelSpec s = small_spec();
  s.head_dropout = 0.5;
  s.token_dropout = 0.9;
  const DropoutDraw draw(s, dropout_keys(9, 0, range(500), torch::kCPU), 3);
  const torch::Tensor keep = draw.weight_keep(false, 4, 5, 6);
  EXPECT_EQ(keep.sizes(), (std::vector<int64_t>{500, 4, 1, 1})) << "one value per sample and head";
  EXPECT_TRUE(((keep == 0) | (keep == 2)).all().item<bool>()) << "kept heads are scaled by 1/(1-p)";
  EXPECT_NEAR((keep == 0).to(torch::kDouble).mean().item<double>(), 0.5, 0.05);
  const torch::Tensor hidden = draw.token_bias(4).isinf().squeeze();  // [500, 4]
  EXPECT_TRUE((hidden.logical_not().sum(1) >= 1).all().item<bool>()) << "a sample lost every image token";
  EXPECT_GT(hidden.to(torch::kDouble).mean().item<double>(), 0.6);
  EXPECT_FALSE(DropoutDraw(small_spec(), draw.keys, 3).active()) << "no rates, no draws";
}

// A sample's masks follow it whatever batch it is in: what makes DP and PP
// parity possible with dropout on.
TEST(KeyedDropout, ASampleSeesTheSameMasksInAnyBatch) {
  const ModelSpec s = with_dropout(small_spec(), 0.3);
  torch::manual_seed(2);
  VlmModel model(s);
  const StageInputs in = random_inputs(s, 4, 5);
  const torch::Tensor keys = dropout_keys(1, 2, range(4), torch::kCPU);
  torch::NoGradGuard no_grad;
  Block block = model->vision_blocks()[1];  // a handle
  const torch::Tensor x = model->embed_patches(in.images);
  const torch::Tensor batched = block->forward(x, {}, nullptr, DropoutDraw(s, keys, 1));
  const torch::Tensor alone = block->forward(x.narrow(0, 2, 1), {}, nullptr, DropoutDraw(s, keys.narrow(0, 2, 1), 1));
  EXPECT_TRUE(torch::allclose(batched.narrow(0, 2, 1), alone, 1e-5, 1e-6));
  EXPECT_FALSE(torch::allclose(batched, block->forward(x, {}, nullptr)));
  EXPECT_FALSE(torch::allclose(batched, block->forward(x, {}, nullptr, DropoutDraw(s, keys, 0))))
      << "another layer draws other masks";
}

TEST(KeyedDropout, WithoutKeysTheModelIsTheModelWithoutDropout) {
  const ModelSpec with = with_dropout(small_spec(), 0.5);
  torch::manual_seed(4);
  VlmModel a(small_spec());
  torch::manual_seed(4);
  VlmModel b(with);
  const StageInputs in = random_inputs(with, 3, 6);
  EXPECT_TRUE(torch::equal(a->forward(in).weighted_loss(a->spec()), b->forward(in).weighted_loss(with)));
  StageInputs keyed = in;
  keyed.dropout_keys = dropout_keys(1, 0, range(3), torch::kCPU);
  EXPECT_FALSE(torch::equal(a->forward(in).weighted_loss(a->spec()), b->forward(keyed).weighted_loss(with)));
}

// The recomputed blocks give the same loss and gradients as the stored ones,
// with shared weights, cross-attention, dropout, and the conv stem.
TEST(ActivationCheckpointing, GradientsEqualThoseOfTheStoredForward) {
  ModelSpec plain = small_spec();
  plain.stem_channels = 4;
  plain.attention_dropout = 0.2;
  plain.head_dropout = 0.2;
  plain.token_dropout = 0.2;
  ModelSpec checkpointed = plain;
  checkpointed.activation_checkpointing = true;
  torch::manual_seed(8);
  VlmModel a(plain);
  torch::manual_seed(8);
  VlmModel b(checkpointed);
  StageInputs in = random_inputs(plain, 4, 7);
  in.dropout_keys = dropout_keys(3, 1, range(4), torch::kCPU);
  const torch::Tensor loss_a = a->forward(in).weighted_loss(plain), loss_b = b->forward(in).weighted_loss(checkpointed);
  EXPECT_TRUE(torch::equal(loss_a, loss_b));
  loss_a.backward();
  loss_b.backward();
  const auto pa = unique_parameters(*a), pb = unique_parameters(*b);
  ASSERT_EQ(pa.size(), pb.size());
  for (size_t i = 0; i < pa.size(); ++i) {
    ASSERT_EQ(pa[i].name, pb[i].name);
    ASSERT_TRUE(pb[i].tensor.grad().defined()) << pb[i].name;
    EXPECT_TRUE(torch::allclose(pa[i].tensor.grad(), pb[i].tensor.grad(), 1e-5, 1e-7)) << pa[i].name;
  }
}

// Copies every tensor `to` shares a name with from `from`.
void copy_shared_parameters(VlmModel& from, VlmModel& to) {
  torch::NoGradGuard no_grad;
  std::map<std::string, torch::Tensor> source;
  for (const auto& p : unique_parameters(*from)) source[p.name] = p.tensor;
  for (const auto& p : unique_parameters(*to)) {
    if (source.count(p.name) != 0) p.tensor.copy_(source.at(p.name));
  }
}

// A gate of all ones (log 0) is the ungated model, bit for bit: at a block,
// and for the whole model when the saliency head says 1 everywhere.
TEST(SaliencyGating, AMapOfOnesReproducesTheUngatedModelExactly) {
  ModelSpec gated = small_spec();
  gated.saliency = true;
  gated.saliency_gate_vision = true;
  torch::manual_seed(5);
  VlmModel with(gated);
  VlmModel without(small_spec());
  copy_shared_parameters(with, without);
  {
    torch::NoGradGuard no_grad;
    with->named_parameters()["saliency.score.weight"].zero_();
    with->named_parameters()["saliency.score.bias"].fill_(200);  // log-sigmoid(200) is exactly 0 in float
  }
  const StageInputs in = random_inputs(gated, 3, 2);
  torch::Tensor log_gate;
  with->encode_image(in.images, &log_gate);
  EXPECT_TRUE(torch::equal(log_gate, torch::zeros_like(log_gate)));
  EXPECT_TRUE(torch::equal(with->forward(in).weighted_loss(gated), without->forward(in).weighted_loss(without->spec())));

  Block block = without->vision_blocks()[0];
  const torch::Tensor x = without->embed_patches(in.images);
  PatchAttention ones;
  ones.log_gate = torch::zeros({3, gated.image_tokens()});
  EXPECT_TRUE(torch::equal(block->forward(x, {}, nullptr, DropoutDraw(), ones), block->forward(x, {})));
}

// A gate of 0 on patch j (log 0 = -inf): nothing about j reaches the output.
TEST(SaliencyGating, AZeroGateRemovesThePatchsInfluence) {
  ModelSpec s = small_spec();
  torch::manual_seed(6);
  VlmModel model(s);
  const StageInputs in = random_inputs(s, 2, 3);
  torch::NoGradGuard no_grad;
  torch::Tensor log_gate;
  const torch::Tensor tokens = model->encode_image(in.images, &log_gate);
  ASSERT_FALSE(log_gate.defined()) << "no saliency head, no gate";
  const int64_t j = 5;
  torch::Tensor gate = torch::zeros({2, s.image_tokens()});
  gate.select(1, j).fill_(-std::numeric_limits<float>::infinity());
  torch::Tensor changed = tokens.clone();
  changed.select(1, j).normal_();  // another patch j
  const torch::Tensor hidden = model->encode_text(in.tokens);
  const torch::Tensor a = model->caption_logits(hidden, model->image_kv(tokens, gate));
  const torch::Tensor b = model->caption_logits(hidden, model->image_kv(changed, gate));
  EXPECT_TRUE(torch::equal(a, b)) << "the gated-out patch still moves the captions";
  EXPECT_FALSE(torch::equal(model->caption_logits(hidden, model->image_kv(tokens)),
                            model->caption_logits(hidden, model->image_kv(changed))));
  // In the vision self-attention too: only token j's own row may change.
  Block block = model->vision_blocks()[0];
  const torch::Tensor x = model->embed_patches(in.images);
  torch::Tensor y = x.clone();
  y.select(1, j).normal_();
  PatchAttention patches;
  patches.log_gate = gate;
  const torch::Tensor from_x = block->forward(x, {}, nullptr, DropoutDraw(), patches);
  const torch::Tensor from_y = block->forward(y, {}, nullptr, DropoutDraw(), patches);
  const torch::Tensor others = torch::arange(s.image_tokens()).ne(j);
  EXPECT_TRUE(torch::equal(from_x.index({torch::indexing::Slice(), others}), from_y.index({torch::indexing::Slice(), others})));
}

TEST(SaliencyGating, TheHeadsMapIsInUnitRangeAndFollowsTheImage) {
  ModelSpec s = small_spec();
  s.saliency = true;
  SaliencyHead head(s);
  const StageInputs a = random_inputs(s, 2, 4), b = random_inputs(s, 2, 5);
  const torch::Tensor map = head->log_map(a.images).exp();
  EXPECT_EQ(map.sizes(), (std::vector<int64_t>{2, s.image_tokens()}));
  EXPECT_TRUE(in_unit_range(map));
  EXPECT_FALSE(torch::equal(map, head->log_map(b.images).exp()));
}

// Keeping every token (r = 1, through the pruning code) is the unpruned model.
TEST(TokenPruning, KeepingEveryTokenIsTheUnprunedModel) {
  ModelSpec all = small_spec();
  all.vision_relative_bias = true;
  ModelSpec pruned = all;
  pruned.prune_keep_ratio = 0.999;  // rounds to every token, yet runs the ranking and the gather
  pruned.prune_after_layer = 1;
  ASSERT_TRUE(pruned.prunes_tokens());
  ASSERT_EQ(pruned.kept_image_tokens(), all.image_tokens());
  torch::manual_seed(7);
  VlmModel a(all);
  torch::manual_seed(7);
  VlmModel b(pruned);
  const StageInputs in = random_inputs(all, 3, 8);
  EXPECT_TRUE(torch::equal(a->forward(in).weighted_loss(all), b->forward(in).weighted_loss(pruned)));
}

// After the last vision block, the kept tokens are exactly the r x N most
// attended ones of the unpruned model, in grid order; the cache shrinks.
TEST(TokenPruning, KeepsTheMostAttendedTokensAndShrinksTheCache) {
  ModelSpec all = small_spec();
  ModelSpec pruned = all;
  pruned.prune_keep_ratio = 0.25;
  pruned.prune_after_layer = 2;
  torch::manual_seed(9);
  VlmModel a(all);
  torch::manual_seed(9);
  VlmModel b(pruned);
  const StageInputs in = random_inputs(all, 2, 10);
  torch::NoGradGuard no_grad;
  const int64_t kept = pruned.kept_image_tokens();
  ASSERT_EQ(kept, 8);
  const torch::Tensor full = a->encode_image(in.images), few = b->encode_image(in.images);
  EXPECT_EQ(few.sizes(), (std::vector<int64_t>{2, kept, all.d_model}));
  // The importance the last block gives each token of the unpruned model.
  torch::Tensor x = a->embed_patches(in.images), received;
  Block first = a->vision_blocks()[0], last = a->vision_blocks()[1];
  x = first->forward(x, {});
  PatchAttention rank;
  rank.received = &received;
  last->forward(x, {}, nullptr, DropoutDraw(), rank);
  const torch::Tensor expected = std::get<0>(std::get<1>(received.topk(kept, 1)).sort(1));
  for (int64_t i = 0; i < 2; ++i) {
    EXPECT_TRUE(torch::allclose(few[i], full[i].index_select(0, expected[i]), 1e-5, 1e-6)) << "sample " << i;
  }
  EXPECT_EQ(kv_cache_layout(pruned).image_tokens(), kept);
  EXPECT_EQ(kv_cache_layout(pruned).bytes_per_image() * 4, kv_cache_layout(all).bytes_per_image());
  EXPECT_EQ(image_kv_bytes(b->start_decoding(in.images).image_kv) * 4, image_kv_bytes(a->start_decoding(in.images).image_kv));
}

}  // namespace
}  // namespace vlm
