#include "model/vlm.h"

#include <glog/logging.h>

#include <algorithm>
#include <unordered_set>
#include <vector>

#include "model/losses.h"
#include "model/pipeline_stage.h"

namespace vlm {
namespace {

// `kv` [B, H, T, head_dim] copied into the first T of `positions` (T <= positions).
torch::Tensor with_positions(const torch::Tensor& kv, int64_t positions) {
  std::vector<int64_t> shape = kv.sizes().vec();
  shape[2] = positions;
  torch::Tensor bigger = torch::empty(shape, kv.options());
  bigger.narrow(2, 0, kv.size(2)).copy_(kv);
  return bigger;
}

}  // namespace

VlmModelImpl::VlmModelImpl(const ModelSpec& spec) : spec_(spec) {
  const int64_t d = spec.d_model;
  CHECK_EQ(d % spec.heads, 0) << "d_model must divide by heads (validated in the config)";
  CHECK_EQ(spec.image_height % spec.patch_size, 0);
  CHECK_EQ(spec.image_width % spec.patch_size, 0);

  // Vision tower. Blocks of one sharing group receive the same projection module.
  if (spec.stem_channels > 0) conv_stem_ = register_module("conv_stem", ConvStem(spec));
  if (spec.saliency) saliency_ = register_module("saliency", SaliencyHead(spec));
  patch_embed_ = register_module("patch_embed", Linear(spec.patch_values(), d));
  vision_pos_ = register_parameter("vision_pos", torch::zeros({1, spec.image_tokens(), d}));
  auto vision_list = register_module("vision_blocks", torch::nn::ModuleList());
  std::vector<SelfAttentionProjections> vision_attn;
  for (int64_t g = 0; g < spec.vision_attn_groups(); ++g) {
    const int64_t heads = spec.heads_of(AttentionKind::kVisionSelf, g);
    vision_attn.push_back(spec.vision_relative_bias
                              ? SelfAttentionProjections(d, heads, spec.head_dim(), spec.patch_rows(), spec.patch_columns())
                              : SelfAttentionProjections(d, heads, spec.head_dim()));
  }
  for (int64_t i = 0; i < spec.vision_layers; ++i) {
    auto& attn = vision_attn[ModelSpec::share_group_of(i, spec.vision_self_attn_share)];
    vision_blocks_.emplace_back(d, spec.ffn_dim(), attn);
    vision_list->push_back(vision_blocks_.back());
  }
  vision_norm_ = register_module("vision_norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({d})));
  image_proj_ = register_module("image_proj",
                                Linear(torch::nn::LinearOptions(d, spec.embed_dim).bias(false)));

  // Text tower: unimodal blocks then multimodal blocks, one self-attention
  // sharing sequence over both; cross K/V shared over multimodal blocks.
  token_embed_ = register_module("token_embed", torch::nn::Embedding(spec.vocab_size, d));
  text_pos_ = register_parameter("text_pos", torch::zeros({1, spec.max_tokens, d}));
  auto text_list = register_module("text_blocks", torch::nn::ModuleList());
  std::vector<SelfAttentionProjections> text_attn;
  for (int64_t g = 0; g < spec.text_attn_groups(); ++g) {
    text_attn.emplace_back(d, spec.heads_of(AttentionKind::kTextSelf, g), spec.head_dim());
  }
  for (int64_t g = 0; g < spec.cross_kv_groups(); ++g) {
    cross_kv_.emplace_back(d, spec.heads_of(AttentionKind::kCross, g), spec.head_dim());
  }
  for (int64_t i = 0; i < spec.text_layers(); ++i) {
    auto& attn = text_attn[ModelSpec::share_group_of(i, spec.text_self_attn_share)];
    const int64_t m = i - spec.unimodal_layers;  // index among multimodal blocks
    CrossKVProjection cross = m >= 0 ? cross_kv_[ModelSpec::share_group_of(m, spec.cross_kv_share)]
                                     : CrossKVProjection(nullptr);
    text_blocks_.emplace_back(d, spec.ffn_dim(), attn, cross);
    text_list->push_back(text_blocks_.back());
  }
  text_embed_norm_ = register_module("text_embed_norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({d})));
  text_proj_ = register_module("text_proj",
                               Linear(torch::nn::LinearOptions(d, spec.embed_dim).bias(false)));
  caption_norm_ = register_module("caption_norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({d})));
  lm_head_ = register_module("lm_head", Linear(d, spec.vocab_size));
  logit_scale = register_parameter("logit_scale", torch::full({1}, std::log(1.0 / 0.07)));

  causal_mask_ = register_buffer("causal_mask", torch::ones({spec.max_tokens, spec.max_tokens}, torch::kBool).triu(1));
  init_weights();
}

// Small normal initialisation (ViT, CLIP): matrices ~ N(0, 0.02), biases 0,
// norms keep their ones. Shared tensors are visited once per alias, harmlessly.
void VlmModelImpl::init_weights() {
  torch::NoGradGuard no_grad;
  for (auto& p : named_parameters()) {
    const std::string& name = p.key();
    torch::Tensor& t = p.value();
    // The convolutional parts keep their own (model/conv_stem.cpp, model/saliency.cpp).
    if (name == "logit_scale" || name.rfind("conv_stem.", 0) == 0 || name.rfind("saliency.", 0) == 0) continue;
    if (t.dim() >= 2) {
      t.normal_(0.0, 0.02);
    } else if (name.size() >= 4 && name.compare(name.size() - 4, 4, "bias") == 0) {
      t.zero_();
    }
  }
}

torch::Tensor causal_mask(const torch::Tensor& full_mask, int64_t tokens) {
  return full_mask.narrow(0, 0, tokens).narrow(1, 0, tokens);
}

torch::Tensor VlmModelImpl::causal_mask(int64_t tokens) const { return vlm::causal_mask(causal_mask_, tokens); }

torch::Tensor VlmModelImpl::encode_image(const torch::Tensor& images, torch::Tensor* log_gate,
                                         torch::Tensor* kept_patches) {
  if (!vision_) vision_ = std::make_shared<VlmStageImpl>(*this, 0, spec_.vision_layers);
  StageInputs inputs;
  inputs.images = images;
  StageOutput out = vision_->forward(StageCarry{}, inputs);
  if (log_gate != nullptr) *log_gate = out.carry.patch_log_gate;
  if (kept_patches != nullptr) *kept_patches = out.kept_patches;
  return out.carry.image_tokens;
}

torch::Tensor patchify(const torch::Tensor& images, int64_t p) {
  const int64_t b = images.size(0), c = images.size(1), rows = images.size(2) / p, cols = images.size(3) / p;
  // A patch's values in (channel, row, column) order: for one channel, the old (row, column) order.
  return images.reshape({b, c, rows, p, cols, p}).permute({0, 2, 4, 1, 3, 5}).reshape({b, rows * cols, c * p * p});
}

torch::Tensor unit_embedding(Linear& projection, const torch::Tensor& rows) {
  return torch::nn::functional::normalize(projection->forward(rows),
                                          torch::nn::functional::NormalizeFuncOptions().dim(-1));
}

torch::Tensor last_token(const torch::Tensor& hidden, const torch::Tensor& lengths) {
  const int64_t b = hidden.size(0), d = hidden.size(2);
  return hidden.gather(1, (lengths - 1).view({b, 1, 1}).expand({b, 1, d})).squeeze(1);
}

torch::Tensor embed_patches(ConvStem& stem, Linear& patch_embed, const torch::Tensor& positions,
                            const torch::Tensor& images, const ModelSpec& spec) {
  TORCH_CHECK(images.size(1) == spec.image_channels && images.size(2) == spec.image_height &&
                  images.size(3) == spec.image_width,
              "images are ", images.size(1), "x", images.size(2), "x", images.size(3), " (channels x height x width) but "
              "the model was built for ", spec.image_channels, "x", spec.image_height, "x", spec.image_width);
  const torch::Tensor maps = stem.is_empty() ? images : stem->forward(images);
  return patch_embed->forward(patchify(maps, spec.patch_size)) + positions;
}

torch::Tensor VlmModelImpl::embed_patches(const torch::Tensor& images) {
  return vlm::embed_patches(conv_stem_, patch_embed_, vision_pos_, images, spec_);
}

torch::Tensor VlmModelImpl::image_embedding(const torch::Tensor& image_tokens) {
  return unit_embedding(image_proj_, image_tokens.mean(1));
}

torch::Tensor embed_tokens(torch::nn::Embedding& token_embed, const torch::Tensor& positions,
                           const torch::Tensor& tokens, const ModelSpec& spec) {
  const int64_t t = tokens.size(1);
  TORCH_CHECK(t <= spec.max_tokens, "captions of ", t, " tokens exceed model.text.max_tokens(", spec.max_tokens, ")");
  return token_embed->forward(tokens) + positions.narrow(1, 0, t);
}

torch::Tensor VlmModelImpl::embed_tokens(const torch::Tensor& tokens) {
  return vlm::embed_tokens(token_embed_, text_pos_, tokens, spec_);
}

torch::Tensor VlmModelImpl::encode_text(const torch::Tensor& tokens) {
  const int64_t t = tokens.size(1);
  torch::Tensor x = embed_tokens(tokens);
  for (int64_t i = 0; i < spec_.unimodal_layers; ++i) x = text_blocks_[i]->forward(x, causal_mask(t));
  return x;
}

torch::Tensor VlmModelImpl::text_embedding(const torch::Tensor& hidden, const torch::Tensor& lengths) {
  return unit_embedding(text_proj_, text_embed_norm_->forward(last_token(hidden, lengths)));
}

std::vector<ImageKV> VlmModelImpl::image_kv(const torch::Tensor& image_tokens, const torch::Tensor& log_gate) {
  std::vector<ImageKV> per_layer;
  per_layer.reserve(spec_.multimodal_layers);
  for (int64_t m = 0; m < spec_.multimodal_layers; ++m) {
    const bool first_of_group =
        m == 0 || ModelSpec::share_group_of(m, spec_.cross_kv_share) !=
                      ModelSpec::share_group_of(m - 1, spec_.cross_kv_share);
    if (spec_.reuse_image_kv && !first_of_group) {
      per_layer.push_back(per_layer.back());  // same tensors: computed once per group
    } else {
      per_layer.push_back(text_blocks_[spec_.unimodal_layers + m]->cross_kv->project(image_tokens));
      per_layer.back().log_gate = log_gate;
    }
  }
  return per_layer;
}

torch::Tensor VlmModelImpl::caption_logits(const torch::Tensor& hidden,
                                           const std::vector<ImageKV>& image_kv) {
  const int64_t t = hidden.size(1);
  torch::Tensor x = hidden;
  for (int64_t m = 0; m < spec_.multimodal_layers; ++m) {
    x = text_blocks_[spec_.unimodal_layers + m]->forward(x, causal_mask(t), &image_kv[m]);
  }
  return caption_head(x);
}

StageOutput VlmModelImpl::forward(const StageInputs& inputs, const LossReduction& reduction) {
  if (!whole_) whole_ = std::make_shared<VlmStageImpl>(*this, 0, model_blocks(spec_));
  return whole_->forward(StageCarry{}, inputs, reduction);
}

DecodeState VlmModelImpl::start_decoding(const torch::Tensor& images) {
  DecodeState state;
  torch::Tensor log_gate;
  const torch::Tensor image_tokens = encode_image(images, &log_gate, &state.kept_patches);
  state.image_kv = image_kv(image_tokens, log_gate);
  const int64_t b = images.size(0);
  // Room for a caption of the demo's length at first; decode_step grows it.
  const int64_t capacity = std::min<int64_t>(spec_.max_tokens, 32);
  for (int64_t i = 0; i < spec_.text_layers(); ++i) {
    auto shape = std::vector<int64_t>{b, text_blocks_[i]->self_heads(), capacity, spec_.head_dim()};
    state.self_kv.push_back({torch::empty(shape, images.options()), torch::empty(shape, images.options())});
  }
  return state;
}

torch::Tensor VlmModelImpl::decode_step(const torch::Tensor& token, int64_t position, DecodeState* state) {
  // A full cache doubles (up to max_tokens), so its memory follows the captions
  // decoded rather than the longest one the model allows.
  const int64_t capacity = state->self_kv.empty() ? 0 : state->self_kv[0].k.size(2);
  if (position == capacity && capacity < spec_.max_tokens) {
    for (SelfKVCache& cache : state->self_kv) {
      cache.k = with_positions(cache.k, std::min(spec_.max_tokens, 2 * capacity));
      cache.v = with_positions(cache.v, std::min(spec_.max_tokens, 2 * capacity));
    }
  }
  torch::Tensor attention;  // summed over multimodal layers, when recorded
  torch::Tensor x = token_embed_->forward(token.view({-1, 1})) + text_pos_.narrow(1, position, 1);
  for (int64_t i = 0; i < spec_.text_layers(); ++i) {
    const int64_t m = i - spec_.unimodal_layers;
    torch::Tensor weights;
    x = text_blocks_[i]->step(x, position, &state->self_kv[i], m >= 0 ? &state->image_kv[m] : nullptr,
                              state->record_cross_attention && m >= 0 ? &weights : nullptr);
    if (weights.defined()) attention = attention.defined() ? attention + weights.mean({1, 2}) : weights.mean({1, 2});
  }
  if (attention.defined()) state->cross_attention.push_back(attention / static_cast<double>(spec_.multimodal_layers));
  return lm_head_->forward(caption_norm_->forward(x)).squeeze(1);
}

int64_t image_kv_bytes(const std::vector<ImageKV>& image_kv) {
  std::unordered_set<const void*> seen;
  int64_t bytes = 0;
  for (const ImageKV& kv : image_kv) {
    for (const torch::Tensor* t : {&kv.k, &kv.v}) {
      if (seen.insert(t->unsafeGetTensorImpl()).second) bytes += t->nbytes();
    }
  }
  return bytes;
}

}  // namespace vlm
