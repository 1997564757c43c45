#include "model/caption.h"

namespace vlm {
namespace {

// Logits of the last position, recomputing everything from the prefix.
torch::Tensor full_last_logits(VlmModel& model, const torch::Tensor& image_tokens,
                               const std::vector<ImageKV>& image_kv, const torch::Tensor& prefix) {
  torch::Tensor logits = model->caption_logits(model->encode_text(prefix), image_kv);
  return logits.select(1, prefix.size(1) - 1);
}

}  // namespace

torch::Tensor decode_captions(VlmModel& model, const torch::Tensor& images, const CaptionTokens& ids,
                              const Sampling& sampling, int64_t first_sample, bool use_kv_cache) {
  torch::NoGradGuard no_grad;
  const int64_t b = images.size(0), max_tokens = model->spec().max_tokens;
  const auto on_device = torch::TensorOptions(images.device());
  torch::Tensor out = torch::full({b, max_tokens}, ids.pad, on_device.dtype(torch::kLong));
  out.select(1, 0).fill_(ids.bos);
  torch::Tensor finished = torch::zeros({b}, on_device.dtype(torch::kBool));

  DecodeState state;
  torch::Tensor image_tokens;
  std::vector<ImageKV> image_kv;
  EntropyHistory history;
  if (use_kv_cache) {
    state = model->start_decoding(images);
  } else {
    torch::Tensor log_gate;
    image_tokens = model->encode_image(images, &log_gate);
    image_kv = model->image_kv(image_tokens, log_gate);
  }
  for (int64_t pos = 0; pos + 1 < max_tokens; ++pos) {
    torch::Tensor logits = use_kv_cache
                               ? model->decode_step(out.select(1, pos), pos, &state)
                               : full_last_logits(model, image_tokens, image_kv, out.narrow(1, 0, pos + 1));
    torch::Tensor next = pick_tokens(logits, sampling, first_sample, pos + 1, &history).masked_fill(finished, ids.pad);
    out.select(1, pos + 1).copy_(next);
    finished |= next.eq(ids.eos);
    if (finished.all().item<bool>()) break;
  }
  return out;
}

torch::Tensor cached_caption_logits(VlmModel& model, const torch::Tensor& images,
                                    const torch::Tensor& tokens) {
  torch::NoGradGuard no_grad;
  DecodeState state = model->start_decoding(images);
  std::vector<torch::Tensor> steps;
  for (int64_t pos = 0; pos < tokens.size(1); ++pos) {
    steps.push_back(model->decode_step(tokens.select(1, pos), pos, &state));
  }
  return torch::stack(steps, 1);
}

}  // namespace vlm
