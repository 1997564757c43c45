// The VLM and its shared cross-layer attention.

#include <gtest/gtest.h>

#include "data/batch.h"
#include "model/caption.h"
#include "model/flops.h"
#include "model/losses.h"
#include "model/parameters.h"
#include "model/vlm.h"
#include "proto/config.pb.h"
#include "tests/small_model.h"
#include "trainer/optimizer.h"

namespace vlm {
namespace {

ModelSpec tiny_spec(int64_t vision_share, int64_t text_share, int64_t cross_share) {
  ModelSpec s;
  s.d_model = 16;
  s.heads = 2;
  s.ffn_mult = 2;
  s.embed_dim = 8;
  s.image_height = 28;
  s.image_width = 56;
  s.patch_size = 7;
  s.vision_layers = 3;
  s.vision_self_attn_share = vision_share;
  s.unimodal_layers = 2;
  s.multimodal_layers = 3;
  s.text_self_attn_share = text_share;
  s.cross_kv_share = cross_share;
  s.vocab_size = 20;
  s.max_tokens = 8;
  return s;
}

torch::Tensor find(const torch::nn::Module& m, const std::string& name) {
  return m.named_parameters()[name];
}

// (1) The gradient of a shared weight is the sum of the per-layer gradients of
// an untied twin holding copies of the same values.
TEST(SharedAttention, SharedGradientIsSumOfUntiedLayerGradients) {
  torch::manual_seed(1);
  VlmModel shared(tiny_spec(0, 2, 0));
  VlmModel untied(tiny_spec(1, 1, 1));
  {
    torch::NoGradGuard no_grad;
    for (auto& p : untied->named_parameters()) p.value().copy_(find(*shared, p.key()));
  }
  const StageInputs in = random_inputs(shared->spec(), 4, 2);
  for (VlmModel* m : {&shared, &untied}) {
    (*m)->forward({in.images, in.tokens, in.lengths, 0}).weighted_loss((*m)->spec()).backward();
  }
  int shared_tensors = 0;
  for (const UniqueParameter& p : unique_parameters(*shared)) {
    torch::Tensor expected = find(*untied, p.name).grad().clone();
    for (const auto& alias : p.aliases) expected += find(*untied, alias).grad();
    shared_tensors += !p.aliases.empty();
    EXPECT_TRUE(torch::allclose(p.tensor.grad(), expected, 1e-4, 1e-6))
        << p.name << " (" << p.aliases.size() << " aliases) max diff "
        << (p.tensor.grad() - expected).abs().max().item<double>();
  }
  // vision qkv.weight, out.weight, out.bias; text 2 groups of those 3; cross kv.weight
  EXPECT_EQ(shared_tensors, 3 + 6 + 1);
}

// (2) Image K/V computed once per sharing group equals K/V recomputed in every layer.
TEST(SharedAttention, ImageKvComputedOnceEqualsRecomputedPerLayer) {
  ModelSpec reuse = tiny_spec(1, 1, 0), recompute = reuse;
  recompute.reuse_image_kv = false;
  torch::manual_seed(3);
  VlmModel a(reuse);
  torch::manual_seed(3);
  VlmModel b(recompute);
  torch::NoGradGuard no_grad;
  const StageInputs in = random_inputs(reuse, 3, 4);
  torch::Tensor tokens = a->encode_image(in.images);
  const auto once = a->image_kv(tokens), every = b->image_kv(tokens);
  ASSERT_EQ(once.size(), 3u);
  for (size_t layer = 0; layer < once.size(); ++layer) {
    EXPECT_TRUE(torch::equal(once[layer].k, every[layer].k)) << layer;
    EXPECT_TRUE(torch::equal(once[layer].v, every[layer].v)) << layer;
    EXPECT_EQ(once[layer].k.data_ptr(), once[0].k.data_ptr()) << "reused, not recomputed";
  }
  EXPECT_TRUE(torch::equal(a->caption_logits(a->encode_text(in.tokens), once),
                           b->caption_logits(b->encode_text(in.tokens), every)));
  EXPECT_TRUE(torch::equal(a->forward({in.images, in.tokens, in.lengths, 0}).caption,
                           b->forward({in.images, in.tokens, in.lengths, 0}).caption));
  EXPECT_EQ(image_kv_bytes(every), 3 * image_kv_bytes(once));
}

// (3) KV-cached decoding equals full recomputation.
TEST(Captioning, KvCachedDecodingEqualsFullRecomputation) {
  for (auto sharing : {std::array<int64_t, 3>{1, 1, 1}, std::array<int64_t, 3>{0, 0, 0}, std::array<int64_t, 3>{2, 3, 2}}) {
    torch::manual_seed(5);
    VlmModel model(tiny_spec(sharing[0], sharing[1], sharing[2]));
    model->eval();
    torch::NoGradGuard no_grad;
    const StageInputs in = random_inputs(model->spec(), 4, 6);
    torch::Tensor full = model->caption_logits(model->encode_text(in.tokens), model->image_kv(model->encode_image(in.images)));
    torch::Tensor cached = cached_caption_logits(model, in.images, in.tokens);
    EXPECT_LE((full - cached).abs().max().item<double>(), 1e-5);
    const CaptionTokens ids{1, 2, 0};
    EXPECT_TRUE(torch::equal(decode_captions(model, in.images, ids, {}, 0, true), decode_captions(model, in.images, ids, {}, 0, false)));
  }
}

// Padding after every caption's end changes neither the loss nor any
// gradient: the loader may cut those columns (without_padding).
TEST(Captioning, PaddingColumnsChangeNothing) {
  torch::manual_seed(8);
  ModelSpec spec = tiny_spec(1, 1, 1);
  spec.max_tokens = 20;
  VlmModel model(spec);
  StageInputs in = random_inputs(spec, 4, 9);
  in.lengths = torch::tensor({5, 9, 3, 7}, torch::kLong);
  for (int64_t i = 0; i < 4; ++i) in.tokens[i].narrow(0, in.lengths[i].item<int64_t>(), 20 - in.lengths[i].item<int64_t>()).fill_(0);
  const Batch padded{in.images, in.tokens, in.lengths};
  const Batch cut = without_padding(padded);
  ASSERT_EQ(cut.tokens.size(1), 9);
  std::vector<std::vector<torch::Tensor>> grads;
  std::vector<double> losses;
  for (const Batch* b : {&padded, &cut}) {
    model->zero_grad();
    const torch::Tensor loss = model->forward({b->images, b->tokens, b->lengths, 0}).weighted_loss(spec);
    loss.backward();
    losses.push_back(loss.item<double>());
    grads.emplace_back();
    for (const auto& p : model->parameters()) grads.back().push_back(p.grad().defined() ? p.grad().clone() : torch::zeros_like(p));
  }
  EXPECT_NEAR(losses[0], losses[1], 1e-6 * std::abs(losses[0]));
  for (size_t i = 0; i < grads[0].size(); ++i) {
    EXPECT_TRUE(torch::allclose(grads[0][i], grads[1][i], 1e-4, 1e-6)) << model->named_parameters().keys()[i];
  }
}

// The cache starts small and doubles (32, 64, then max_tokens 80): captions
// longer than its first capacity still equal full recomputation.
TEST(Captioning, KvCacheGrowsPastItsFirstCapacity) {
  torch::manual_seed(6);
  ModelSpec spec = tiny_spec(1, 1, 1);
  spec.max_tokens = 80;
  VlmModel model(spec);
  model->eval();
  torch::NoGradGuard no_grad;
  const StageInputs in = random_inputs(spec, 2, 7);
  EXPECT_EQ(model->start_decoding(in.images).self_kv[0].k.size(2), 32) << "the first capacity";
  torch::Tensor full = model->caption_logits(model->encode_text(in.tokens), model->image_kv(model->encode_image(in.images)));
  EXPECT_LE((full - cached_caption_logits(model, in.images, in.tokens)).abs().max().item<double>(), 1e-5);
  const CaptionTokens ids{1, spec.vocab_size, 0};  // an end token never drawn: every caption runs to max_tokens
  const torch::Tensor cached = decode_captions(model, in.images, ids, {}, 0, true);
  EXPECT_EQ(cached.size(1), 80);
  EXPECT_TRUE(torch::equal(cached, decode_captions(model, in.images, ids, {}, 0, false)));
}

// (4) Causality: later tokens never change earlier logits or the text embedding.
TEST(Captioning, LaterTokensDoNotChangeEarlierLogits) {
  torch::manual_seed(7);
  VlmModel model(tiny_spec(1, 0, 0));
  torch::NoGradGuard no_grad;
  const StageInputs in = random_inputs(model->spec(), 2, 8);
  const int64_t keep = 4;
  torch::Tensor changed = in.tokens.clone();
  changed.narrow(1, keep, changed.size(1) - keep).random_(4, model->spec().vocab_size);
  ASSERT_FALSE(torch::equal(changed, in.tokens));
  const auto image_kv = model->image_kv(model->encode_image(in.images));
  const torch::Tensor lengths = torch::full({2}, keep, torch::kLong);
  const torch::Tensor a = model->caption_logits(model->encode_text(in.tokens), image_kv);
  const torch::Tensor b = model->caption_logits(model->encode_text(changed), image_kv);
  EXPECT_TRUE(torch::allclose(a.narrow(1, 0, keep), b.narrow(1, 0, keep), 0, 1e-6));
  EXPECT_TRUE(torch::allclose(model->text_embedding(model->encode_text(in.tokens), lengths),
                              model->text_embedding(model->encode_text(changed), lengths), 0, 1e-6));
  EXPECT_FALSE(torch::allclose(a.narrow(1, keep, 1), b.narrow(1, keep, 1)));
}

// The training forward pass (the one-stage case of the stage forward) gives
// the losses of the inference pieces evaluation and captioning use.
// Relative position bias (model.vision.relative_position_bias): B[h, i, j]
// depends only on the 2-D offset of patch j from patch i, so it is unchanged
// by shifting both patches by any in-range (dr, dc).
TEST(RelativePositionBias, DependsOnlyOnTheOffset) {
  ModelSpec spec = tiny_spec(0, 1, 1);  // 4 x 8 patches
  spec.vision_relative_bias = true;
  torch::manual_seed(21);
  VlmModel model(spec);
  const auto& attn = model->vision_blocks()[0]->self_attn;
  ASSERT_TRUE(attn->relative_position_bias.defined());
  const torch::Tensor b = attn->position_bias();
  const int64_t rows = spec.patch_rows(), columns = spec.patch_columns(), t = rows * columns;
  ASSERT_EQ(b.sizes(), torch::IntArrayRef({spec.heads, t, t}));
  auto at = b.accessor<float, 3>();
  int64_t checked = 0;
  for (int64_t i = 0; i < t; ++i) {
    for (int64_t j = 0; j < t; ++j) {
      const int64_t ri = i / columns, ci = i % columns, rj = j / columns, cj = j % columns;
      for (int64_t dr = -(rows - 1); dr < rows; ++dr) {
        for (int64_t dc = -(columns - 1); dc < columns; ++dc) {
          const int64_t a = ri + dr, b2 = ci + dc, c = rj + dr, d = cj + dc;
          if (a < 0 || a >= rows || c < 0 || c >= rows || b2 < 0 || b2 >= columns || d < 0 || d >= columns) continue;
          for (int64_t h = 0; h < spec.heads; ++h) ASSERT_EQ(at[h][i][j], at[h][a * columns + b2][c * columns + d]);
          ++checked;
        }
      }
    }
  }
  EXPECT_GT(checked, t * t);
  // Distinct offsets read distinct entries: the table was drawn at random.
  EXPECT_NE(at[0][0][1], at[0][0][columns]);
  // One table per sharing group: with all 3 vision blocks sharing, one table.
  int64_t tables = 0;
  for (const auto& p : unique_parameters(*model)) tables += p.name.find("relative_position_bias") != std::string::npos;
  EXPECT_EQ(tables, 1);
}

// A zero bias is the model without it, exactly; the bias learns (it gets a gradient).
TEST(RelativePositionBias, AZeroBiasIsTheModelWithoutIt) {
  ModelSpec plain = tiny_spec(2, 1, 1), biased = plain;
  biased.vision_relative_bias = true;
  VlmModel without(plain), with(biased);
  {
    torch::NoGradGuard no_grad;
    auto theirs = without->named_parameters();
    for (auto& p : with->named_parameters()) {
      if (p.key().find("relative_position_bias") != std::string::npos) {
        p.value().zero_();
      } else {
        p.value().copy_(theirs[p.key()]);
      }
    }
  }
  const StageInputs in = random_inputs(plain, 4, 13);
  const StageOutput a = without->forward({in.images, in.tokens, in.lengths, 0});
  const StageOutput b = with->forward({in.images, in.tokens, in.lengths, 0});
  EXPECT_TRUE(torch::equal(a.contrastive, b.contrastive));
  EXPECT_TRUE(torch::equal(a.caption, b.caption));
  b.weighted_loss(biased).backward();
  const torch::Tensor table = with->vision_blocks()[0]->self_attn->relative_position_bias;
  ASSERT_TRUE(table.grad().defined());
  EXPECT_GT(table.grad().abs().sum().item<double>(), 0);
}

TEST(Model, TrainingForwardMatchesTheInferencePieces) {
  torch::manual_seed(11);
  VlmModel model(tiny_spec(2, 3, 2));
  torch::NoGradGuard no_grad;
  const StageInputs in = random_inputs(model->spec(), 4, 12);
  const StageOutput out = model->forward({in.images, in.tokens, in.lengths, 0});
  const torch::Tensor image_tokens = model->encode_image(in.images);
  const torch::Tensor hidden = model->encode_text(in.tokens);
  const torch::Tensor contrastive = contrastive_loss(model->image_embedding(image_tokens),
                                                     model->text_embedding(hidden, in.lengths), model->logit_scale);
  const torch::Tensor caption = caption_loss(model->caption_logits(hidden, model->image_kv(image_tokens)), in.tokens, 0, 0);
  EXPECT_NEAR(out.contrastive.item<double>(), contrastive.item<double>(), 1e-6);
  EXPECT_NEAR(out.caption.item<double>(), caption.item<double>(), 1e-6);
  EXPECT_NEAR(out.weighted_loss(model->spec()).item<double>(),
              model->spec().contrastive_weight * contrastive.item<double>() +
                  model->spec().caption_weight * caption.item<double>(), 1e-5);
}

// Closed form of the unique parameter count (see model/vlm.cpp for the layout).
int64_t expected_parameters(const ModelSpec& s) {
  const int64_t d = s.d_model, f = s.ffn_dim(), e = s.embed_dim, v = s.vocab_size, p2 = s.patch_values();
  const int64_t attention = 4 * d * d + d;  // W_q, W_k, W_v (no biases), W_o with its bias
  const int64_t block_rest = 2 * d + 2 * d + (d * f + f) + (f * d + d);  // two norms + FFN
  const int64_t cross_rest = 2 * d + 2 * (d * d + d);                   // norm + W_q, W_o
  const int64_t cross_kv = 2 * d * d;  // W_k, W_v, no biases
  return (p2 * d + d) + s.image_tokens() * d + s.vision_layers * block_rest + s.vision_attn_groups() * attention +
         2 * d + d * e +                                                      // vision norm, image projection
         v * d + s.max_tokens * d + s.text_layers() * block_rest + s.text_attn_groups() * attention +
         s.multimodal_layers * cross_rest + s.cross_kv_groups() * cross_kv +
         2 * d + d * e + 2 * d + (d * v + v) + 1;                             // norms, projection, LM head, logit_scale
}

// (5) Unique parameter count per sharing setting; an optimizer step moves a shared weight once.
TEST(SharedAttention, UniqueParameterCountMatchesClosedForm) {
  for (int64_t vs : {1, 2, 0}) {
    for (int64_t ts : {1, 2, 0}) {
      for (int64_t cs : {1, 2, 0}) {
        const ModelSpec spec = tiny_spec(vs, ts, cs);
        VlmModel model(spec);
        EXPECT_EQ(unique_parameter_count(*model), expected_parameters(spec)) << vs << ts << cs;
      }
    }
  }
  // Sharing everything: groups 1 instead of L; parameters drop by (L-1)(4d^2+d) per tower
  // and (L-1) 2d^2 for the cross K/V.
  const ModelSpec none = tiny_spec(1, 1, 1), all = tiny_spec(0, 0, 0);
  EXPECT_EQ(expected_parameters(none) - expected_parameters(all),
            (3 - 1) * (4 * 16 * 16 + 16) + (5 - 1) * (4 * 16 * 16 + 16) + (3 - 1) * (2 * 16 * 16));
}

TEST(SharedAttention, OptimizerStepMovesASharedWeightExactlyOnce) {
  const double lr = 1e-2;
  OptimConfig config;
  config.set_lr(lr);
  config.set_weight_decay(0);
  auto step_and_measure = [&](bool deduplicated) {
    torch::manual_seed(9);
    VlmModel model(tiny_spec(0, 0, 0));
    const StageInputs in = random_inputs(model->spec(), 4, 10);
    torch::Tensor w = find(*model, "vision_blocks.0.self_attn.qkv.weight");
    torch::Tensor before = w.detach().clone();
    model->forward({in.images, in.tokens, in.lengths, 0}).weighted_loss(model->spec()).backward();
    if (deduplicated) {
      AdamW(unique_parameters(*model), config).step(lr, torch::scalar_tensor(true), {});
    } else {  // the hazard: parameters() lists the shared tensor once per layer
      torch::optim::AdamW(model->parameters(), torch::optim::AdamWOptions(lr).weight_decay(0)).step();
    }
    return (w.detach() - before).abs().max().item<double>();
  };
  // Adam's first step moves each element by lr * g / (|g| + eps), i.e. at most lr.
  const double once = step_and_measure(true);
  EXPECT_LE(once, lr * 1.0001);
  EXPECT_GE(once, lr * 0.99);
  EXPECT_GT(step_and_measure(false), 1.5 * lr) << "stepping parameters() moves the shared weight 3 times";
}

// (6) Image-KV bytes: 2 (K and V) x groups x image tokens x d_kv x bytes per element.
TEST(SharedAttention, ImageKvBytesMatchClosedForm) {
  for (int64_t cs : {1, 2, 0}) {
    const ModelSpec spec = tiny_spec(1, 1, cs);
    VlmModel model(spec);
    torch::NoGradGuard no_grad;
    const DecodeState state = model->start_decoding(torch::randn({1, 1, 28, 56}));
    EXPECT_EQ(image_kv_bytes(state.image_kv), 2 * spec.cross_kv_groups() * spec.image_tokens() * spec.d_model * 4) << cs;
  }
}

TEST(Flops, CountFollowsTheDocumentedFormula) {
  ModelSpec s = tiny_spec(1, 1, 1);
  const FlopCount c = flops_per_sample(s, s.max_tokens);
  const double d = 16, f = 32, n = 32;
  const double vision = 2 * n * 49 * d + 3 * (2 * n * d * 3 * d + 2 * n * d * d + 2 * 2 * n * d * n + 2 * 2 * n * d * f) + 2 * d * 8;
  EXPECT_DOUBLE_EQ(c.vision, vision);
  EXPECT_DOUBLE_EQ(c.train(), 3 * c.forward());
  ModelSpec shared = tiny_spec(0, 0, 0);
  // Sharing the cross K/V saves (layers - groups) image K/V projections; self-attention sharing saves no FLOPs.
  EXPECT_DOUBLE_EQ(c.text - flops_per_sample(shared, s.max_tokens).text, (3 - 1) * 2 * n * d * 2 * d);
  EXPECT_DOUBLE_EQ(c.vision, flops_per_sample(shared, s.max_tokens).vision);
  // Text counts the positions a batch holds (its width), not max_tokens.
  const FlopCount narrow = flops_per_sample(s, 4);
  EXPECT_DOUBLE_EQ(narrow.vision, c.vision);
  EXPECT_LT(narrow.text, c.text);
  // No text positions: the embedding's projection and the 3 layers' image K/V remain.
  EXPECT_DOUBLE_EQ(flops_per_sample(s, 0).text, 2 * d * 8 + 3 * (2 * n * d * 2 * d));
}

// RGB images: a patch holds every channel's values, channel by channel, and
// a one-channel image patchifies as before (row by row within the patch).
TEST(Model, ReadsRgbImages) {
  const torch::Tensor rgb = torch::arange(3 * 4 * 4, torch::kFloat).reshape({1, 3, 4, 4});
  const torch::Tensor patches = patchify(rgb, 2);
  ASSERT_EQ(patches.sizes(), (std::vector<int64_t>{1, 4, 12}));
  // Patch 1 (top right): channel 0 rows 0-1, columns 2-3, then channel 1, then channel 2.
  EXPECT_TRUE(torch::equal(patches[0][1].slice(0, 0, 4), torch::tensor({2.f, 3.f, 6.f, 7.f})));
  EXPECT_TRUE(torch::equal(patches[0][1].slice(0, 4, 8), torch::tensor({18.f, 19.f, 22.f, 23.f})));
  const torch::Tensor grey = rgb.slice(1, 0, 1);
  EXPECT_TRUE(torch::equal(patchify(grey, 2), grey.reshape({1, 2, 2, 2, 2}).permute({0, 1, 3, 2, 4}).reshape({1, 4, 4})));

  ModelSpec s = tiny_spec(0, 2, 0);
  s.image_channels = 3;
  VlmModel model(s);
  const StageInputs in = random_inputs(s, 4, 5);
  const StageOutput out = model->forward({in.images, in.tokens, in.lengths, 0}, {});
  EXPECT_TRUE(torch::isfinite(out.weighted_loss(s)).item<bool>());
  EXPECT_THROW(model->forward({in.images.slice(1, 0, 1), in.tokens, in.lengths, 0}, {}), c10::Error);
}

}  // namespace
}  // namespace vlm
