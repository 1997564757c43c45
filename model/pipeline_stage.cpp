#include "model/pipeline_stage.h"

#include <glog/logging.h>

#include <map>
#include <unordered_set>

#include "model/activation_checkpoint.h"
#include "model/losses.h"

namespace vlm {

int64_t model_blocks(const ModelSpec& s) { return s.vision_layers + s.text_layers(); }

torch::Tensor StageOutput::weighted_loss(const ModelSpec& spec) const {
  torch::Tensor loss;
  if (contrastive.defined()) loss = spec.contrastive_weight * contrastive;
  if (caption.defined()) loss = loss.defined() ? loss + spec.caption_weight * caption : spec.caption_weight * caption;
  return loss;
}

std::vector<std::vector<int64_t>> carry_shapes(const ModelSpec& s, int64_t end, int64_t batch, int64_t text_tokens) {
  const int64_t v = s.vision_layers, u = s.unimodal_layers, kept = s.kept_image_tokens();
  const std::vector<int64_t> none;
  const int64_t tokens = end < v ? s.vision_tokens_at(end) : kept;  // image tokens after block end - 1
  return {end < v ? std::vector<int64_t>{batch, tokens, s.d_model} : none,
          end >= v ? std::vector<int64_t>{batch, kept, s.d_model} : none,
          end >= v && end < v + u ? std::vector<int64_t>{batch, s.embed_dim} : none,
          end > v ? std::vector<int64_t>{batch, text_tokens, s.d_model} : none,
          s.saliency ? std::vector<int64_t>{batch, tokens} : none,
          // Whenever the ranking ran, even if it kept every token: the sender has the positions.
          end < v && s.prunes_tokens() && end >= s.prune_after_layer ? std::vector<int64_t>{batch, kept} : none};
}

std::vector<double> block_costs(const ModelSpec& s, int64_t text_tokens) {
  const double d = s.d_model, f = s.ffn_dim(), n = s.kept_image_tokens(), t = static_cast<double>(text_tokens);
  // w: the width of the block's heads, d unless heads were pruned.
  auto self_block = [&](double tokens, double w) { return 2 * tokens * d * 4 * w + 4 * tokens * tokens * w + 4 * tokens * d * f; };
  auto width = [&](AttentionKind kind, int64_t layer, int64_t share) {
    return static_cast<double>(s.heads_of(kind, ModelSpec::share_group_of(layer, share)) * s.head_dim());
  };
  std::vector<double> costs;
  for (int64_t i = 0; i < s.vision_layers; ++i) {
    costs.push_back(self_block(static_cast<double>(s.vision_tokens_at(i)), width(AttentionKind::kVisionSelf, i, s.vision_self_attn_share)));
  }
  for (int64_t i = 0; i < s.text_layers(); ++i) {
    costs.push_back(self_block(t, width(AttentionKind::kTextSelf, i, s.text_self_attn_share)));
    const int64_t m = i - s.unimodal_layers;
    if (m < 0) continue;
    const double w = width(AttentionKind::kCross, m, s.cross_kv_share);
    costs.back() += 4 * t * d * w + 4 * t * n * w + 4 * n * d * w;
  }
  return costs;
}

std::vector<bool> cuts_between_sharing_groups(const ModelSpec& s) {
  const int64_t v = s.vision_layers, u = s.unimodal_layers;
  std::vector<bool> allowed(model_blocks(s) + 1, true);
  auto same_group = [](int64_t a, int64_t b, int64_t size) {
    return ModelSpec::share_group_of(a, size) == ModelSpec::share_group_of(b, size);
  };
  for (int64_t i = 1; i < model_blocks(s); ++i) {
    if (i < v) allowed[i] = !same_group(i - 1, i, s.vision_self_attn_share);
    if (i > v) allowed[i] = !same_group(i - 1 - v, i - v, s.text_self_attn_share);
    if (i > v + u) allowed[i] = allowed[i] && !same_group(i - 1 - v - u, i - v - u, s.cross_kv_share);
  }
  return allowed;
}

VlmStageImpl::VlmStageImpl(VlmModelImpl& full, int64_t first, int64_t end)
    : spec_(full.spec()), first_(first), end_(end) {
  const int64_t v = spec_.vision_layers, u = spec_.unimodal_layers, total = model_blocks(spec_);
  CHECK(0 <= first && first < end && end <= total) << "stage blocks [" << first << ", " << end << ")";
  auto owns = [&](int64_t block) { return first <= block && block < end; };
  if (owns(0)) {
    if (!full.conv_stem_.is_empty()) conv_stem_ = register_module("conv_stem", full.conv_stem_);
    if (!full.saliency_.is_empty()) saliency_ = register_module("saliency", full.saliency_);
    patch_embed_ = register_module("patch_embed", full.patch_embed_);
    vision_pos_ = register_parameter("vision_pos", full.vision_pos_);
  }
  for (int64_t g = first; g < end; ++g) {
    blocks_.push_back(g < v ? full.vision_blocks_[g] : full.text_blocks_[g - v]);
    register_module("block_" + std::to_string(g), blocks_.back());
  }
  if (owns(v - 1)) {
    vision_norm_ = register_module("vision_norm", full.vision_norm_);
    image_proj_ = register_module("image_proj", full.image_proj_);
  }
  if (owns(v)) {
    token_embed_ = register_module("token_embed", full.token_embed_);
    text_pos_ = register_parameter("text_pos", full.text_pos_);
  }
  if (owns(v + u - 1)) {
    text_embed_norm_ = register_module("text_embed_norm", full.text_embed_norm_);
    text_proj_ = register_module("text_proj", full.text_proj_);
    logit_scale_ = register_parameter("logit_scale", full.logit_scale);
  }
  if (owns(total - 1)) {
    caption_norm_ = register_module("caption_norm", full.caption_norm_);
    lm_head_ = register_module("lm_head", full.lm_head_);
  }
  causal_mask_ = register_buffer("causal_mask", full.causal_mask_);  // a buffer: to(device) moves it
  // The same tensors under the full model's names (a shared weight keeps its first name).
  std::unordered_set<const void*> mine;
  for (const auto& p : parameters()) mine.insert(p.unsafeGetTensorImpl());
  for (const UniqueParameter& p : unique_parameters(full)) {
    if (mine.count(p.tensor.unsafeGetTensorImpl())) global_parameters_.push_back(p);
  }
}

StageOutput VlmStageImpl::forward(StageCarry c, const StageInputs& in, const LossReduction& reduction) {
  const int64_t v = spec_.vision_layers, u = spec_.unimodal_layers, total = model_blocks(spec_);
  torch::Tensor mask;  // causal, over the captions' length
  StageOutput out;
  std::map<int64_t, ImageKV> group_kv;  // image K/V per cross-attention sharing group, on this stage
  for (int64_t g = first_; g < end_; ++g) {
    Block& block = blocks_[g - first_];
    if (g < v) {
      if (g == 0) {
        c.vision_hidden = embed_patches(conv_stem_, patch_embed_, vision_pos_, in.images, spec_);
        if (spec_.saliency) c.patch_log_gate = saliency_->log_map(in.images);
      }
      PatchAttention patches;
      if (c.patch_index.defined()) patches.index = c.patch_index.to(torch::kLong);
      if (spec_.saliency_gate_vision) patches.log_gate = c.patch_log_gate;
      torch::Tensor received;
      const bool prune_after = spec_.prunes_tokens() && g + 1 == spec_.prune_after_layer;
      if (prune_after) patches.received = &received;
      c.vision_hidden = run_block(g, c.vision_hidden, torch::Tensor(), nullptr, in.dropout_keys, patches);
      if (prune_after) prune_tokens(received, &c);
      if (g == v - 1) {
        if (c.patch_index.defined()) out.kept_patches = c.patch_index.to(torch::kLong);
        c.patch_index = torch::Tensor();
        c.image_tokens = vision_norm_->forward(c.vision_hidden);
        c.image_embedding = unit_embedding(image_proj_, c.image_tokens.mean(1));
        c.vision_hidden = torch::Tensor();
      }
    } else if (g < v + u) {
      if (g == v) c.text_hidden = embed_tokens(token_embed_, text_pos_, in.tokens, spec_);
      if (!mask.defined()) mask = causal_mask(causal_mask_, c.text_hidden.size(1));
      c.text_hidden = run_block(g, c.text_hidden, mask, nullptr, in.dropout_keys);
      if (g == v + u - 1) {
        torch::Tensor text = unit_embedding(text_proj_, text_embed_norm_->forward(last_token(c.text_hidden, in.lengths)));
        // Float32 features (bf16 under autocast): the loss wants them, and MPI has no bf16.
        const torch::Tensor image = c.image_embedding.to(torch::kFloat);
        text = text.to(torch::kFloat);
        out.contrastive = reduction.gather ? contrastive_loss(reduction.gather(image), reduction.gather(text), logit_scale_)
                                           : contrastive_loss(image, text, logit_scale_);
        c.image_embedding = torch::Tensor();
      }
    } else {
      const int64_t group = ModelSpec::share_group_of(g - v - u, spec_.cross_kv_share);
      ImageKV kv;
      if (!spec_.reuse_image_kv) {
        kv = block->cross_kv->project(c.image_tokens);
      } else {
        auto it = group_kv.find(group);
        if (it == group_kv.end()) it = group_kv.emplace(group, block->cross_kv->project(c.image_tokens)).first;
        kv = it->second;
      }
      kv.log_gate = c.patch_log_gate;
      if (!mask.defined()) mask = causal_mask(causal_mask_, c.text_hidden.size(1));
      c.text_hidden = run_block(g, c.text_hidden, mask, &kv, in.dropout_keys);
      if (g == total - 1) {
        out.caption = caption_loss(lm_head_->forward(caption_norm_->forward(c.text_hidden)), in.tokens, in.pad_id,
                                   reduction.caption_targets_per_rank);
        c.text_hidden = torch::Tensor();
        c.image_tokens = torch::Tensor();
        c.patch_log_gate = torch::Tensor();
      }
    }
  }
  out.carry = std::move(c);
  return out;
}

torch::Tensor VlmStageImpl::run_block(int64_t g, const torch::Tensor& x, const torch::Tensor& causal_mask,
                                      const ImageKV* image_kv, const torch::Tensor& dropout_keys,
                                      const PatchAttention& patches) {
  Block& block = blocks_[g - first_];
  const DropoutDraw dropout(spec_, dropout_keys, g);
  // The block that ranks tokens for pruning keeps its attention weights: it is not recomputed.
  // A gated block (head scoring) is not recomputed either: its gates are not the recomputation's inputs.
  if (spec_.activation_checkpointing && torch::GradMode::is_enabled() && patches.received == nullptr &&
      !block->self_gate.defined() && !block->cross_gate.defined()) {
    return checkpointed_forward(*block, x, causal_mask, image_kv, dropout, patches);
  }
  return block->forward(x, causal_mask, image_kv, dropout, patches);
}

void VlmStageImpl::prune_tokens(const torch::Tensor& received, StageCarry* c) const {
  const int64_t b = received.size(0), kept = spec_.kept_image_tokens();
  // The most attended tokens, back in grid order (positions were added at embedding).
  const torch::Tensor index = std::get<0>(std::get<1>(received.topk(kept, 1)).sort(1));
  c->vision_hidden = c->vision_hidden.gather(1, index.unsqueeze(-1).expand({b, kept, c->vision_hidden.size(2)}));
  if (c->patch_log_gate.defined()) c->patch_log_gate = c->patch_log_gate.gather(1, index);
  c->patch_index = index.to(torch::kFloat);  // float, as every carried field (exact below 2^24)
}

}  // namespace vlm
