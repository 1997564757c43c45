#pragma once
// The CoCa-style vision-language model with shared cross-layer attention.
// See docs/model.md for the architecture and the sharing rules.

#include <torch/torch.h>

#include <functional>
#include <vector>

#include "model/attention.h"
#include "model/block.h"
#include "model/conv_stem.h"
#include "model/saliency.h"
#include "model/spec.h"
#include "model/stage_io.h"

namespace vlm {

// What greedy decoding keeps between positions: the image K/V (one entry per
// multimodal layer; layers of a sharing group hold the same tensors) and the
// self-attention K/V of every text layer.
struct DecodeState {
  std::vector<ImageKV> image_kv;
  std::vector<SelfKVCache> self_kv;
  // [B, N] int64 grid position of each image token after visual-token pruning; undefined without.
  torch::Tensor kept_patches;
  // When set, each decode_step appends its cross-attention to the image
  // tokens, [B, N] averaged over heads and multimodal layers (vlm-attn).
  bool record_cross_attention = false;
  std::vector<torch::Tensor> cross_attention;
};

class VlmStageImpl;

// [B, C, H, W] -> [B, (H/p)(W/p), C*p*p], rows of patches left to right.
torch::Tensor patchify(const torch::Tensor& images, int64_t patch_size);
// The conv stem's maps (if any) cut into patches and embedded, plus
// positions: the vision blocks' input [B, N, D]. `stem` may be empty.
torch::Tensor embed_patches(ConvStem& stem, Linear& patch_embed, const torch::Tensor& positions,
                            const torch::Tensor& images, const ModelSpec& spec);
// Tokens embedded, plus positions: the text blocks' input [B, T, D].
torch::Tensor embed_tokens(torch::nn::Embedding& token_embed, const torch::Tensor& positions,
                           const torch::Tensor& tokens, const ModelSpec& spec);
// The top-left [tokens, tokens] of a [max_tokens, max_tokens] mask, true above the diagonal.
torch::Tensor causal_mask(const torch::Tensor& full_mask, int64_t tokens);
// Projected and L2-normalised rows: the contrastive embeddings.
torch::Tensor unit_embedding(Linear& projection, const torch::Tensor& rows);
// The hidden state at each sequence's last token (position lengths-1): [B, D].
torch::Tensor last_token(const torch::Tensor& hidden, const torch::Tensor& lengths);

class VlmModelImpl : public torch::nn::Module {
 public:
  explicit VlmModelImpl(const ModelSpec& spec);
  const ModelSpec& spec() const { return spec_; }

  // images [B, 1, H, W] (normalised) -> image tokens [B, N, D] after the
  // final norm (N = spec.kept_image_tokens()). `log_gate`, if given, receives
  // their log saliency [B, N] (undefined without model.saliency).
  // `kept_patches`, if given, receives their grid positions [B, N] after
  // visual-token pruning (undefined without pruning).
  torch::Tensor encode_image(const torch::Tensor& images, torch::Tensor* log_gate = nullptr,
                             torch::Tensor* kept_patches = nullptr);
  // Patches embedded, plus positions: the vision blocks' input [B, N, D].
  torch::Tensor embed_patches(const torch::Tensor& images);
  // Tokens embedded, plus positions: the text blocks' input [B, T, D].
  torch::Tensor embed_tokens(const torch::Tensor& tokens);
  // Final norm and LM head -> [B, T, V].
  torch::Tensor caption_head(const torch::Tensor& hidden) { return lm_head_->forward(caption_norm_->forward(hidden)); }
  torch::Tensor causal_mask(int64_t tokens) const;

  // Mean-pooled, projected, L2-normalised image embedding [B, E].
  torch::Tensor image_embedding(const torch::Tensor& image_tokens);
  // tokens [B, T] (int64) -> unimodal hidden states [B, T, D].
  torch::Tensor encode_text(const torch::Tensor& tokens);
  // Output at the last token (position lengths-1), projected and normalised [B, E].
  torch::Tensor text_embedding(const torch::Tensor& hidden, const torch::Tensor& lengths);
  // Image K/V for each multimodal layer: once per sharing group when
  // spec.reuse_image_kv, else recomputed in every layer; carrying the tokens'
  // log gate (from encode_image) when there is one.
  std::vector<ImageKV> image_kv(const torch::Tensor& image_tokens, const torch::Tensor& log_gate = {});
  // Multimodal blocks and LM head over unimodal hidden states -> [B, T, V].
  torch::Tensor caption_logits(const torch::Tensor& hidden, const std::vector<ImageKV>& image_kv);

  // The training forward pass and its losses: the one-stage case of
  // VlmStage::forward (model/pipeline_stage.h), which it runs.
  StageOutput forward(const StageInputs& inputs, const LossReduction& reduction = {});

  // KV-cached decoding: start once per batch of images, then one call per position.
  DecodeState start_decoding(const torch::Tensor& images);
  torch::Tensor decode_step(const torch::Tensor& token, int64_t position, DecodeState* state);

  torch::Tensor logit_scale;  // log of the contrastive temperature's inverse
  std::vector<Block>& vision_blocks() { return vision_blocks_; }
  std::vector<Block>& text_blocks() { return text_blocks_; }

 private:
  friend class VlmStageImpl;  // cuts its stage's modules out of a full model
  void init_weights();

  ModelSpec spec_;
  ConvStem conv_stem_{nullptr};  // empty without model.vision.conv_stem
  SaliencyHead saliency_{nullptr};  // empty without model.saliency
  Linear patch_embed_{nullptr};
  torch::Tensor vision_pos_;
  std::vector<Block> vision_blocks_;
  torch::nn::LayerNorm vision_norm_{nullptr};
  Linear image_proj_{nullptr};
  torch::nn::Embedding token_embed_{nullptr};
  torch::Tensor text_pos_;
  std::vector<Block> text_blocks_;
  std::vector<CrossKVProjection> cross_kv_;  // one per cross-attention sharing group
  torch::nn::LayerNorm text_embed_norm_{nullptr};
  Linear text_proj_{nullptr};
  torch::nn::LayerNorm caption_norm_{nullptr};
  Linear lm_head_{nullptr};
  torch::Tensor causal_mask_;  // [max_tokens, max_tokens], true above the diagonal
  std::shared_ptr<VlmStageImpl> whole_;   // every block: what forward() runs; made on first use
  std::shared_ptr<VlmStageImpl> vision_;  // the vision blocks: what encode_image() runs; made on first use
};
TORCH_MODULE(VlmModel);

// Bytes of image K/V per image, counting tensors shared by several layers once.
int64_t image_kv_bytes(const std::vector<ImageKV>& image_kv);

}  // namespace vlm
