#include "model/losses.h"

namespace vlm {

torch::Tensor contrastive_loss(const torch::Tensor& image_embedding,
                               const torch::Tensor& text_embedding, const torch::Tensor& log_scale) {
  torch::Tensor logits =
      log_scale.clamp_max(kMaxLogLogitScale).exp() * torch::matmul(image_embedding, text_embedding.t());
  torch::Tensor labels = torch::arange(logits.size(0), logits.options().dtype(torch::kLong));
  return 0.5 * (torch::nn::functional::cross_entropy(logits, labels) +
                torch::nn::functional::cross_entropy(logits.t(), labels));
}

torch::Tensor caption_loss(const torch::Tensor& logits, const torch::Tensor& tokens, int64_t pad_id,
                           double target_count) {
  const int64_t t = tokens.size(1);
  torch::Tensor predicted = logits.narrow(1, 0, t - 1).reshape({-1, logits.size(-1)});
  torch::Tensor targets = tokens.narrow(1, 1, t - 1).reshape({-1});
  if (target_count == 0) target_count = targets.ne(pad_id).sum().item<double>();
  return torch::nn::functional::cross_entropy(
             predicted, targets,
             torch::nn::functional::CrossEntropyFuncOptions().ignore_index(pad_id).reduction(torch::kSum)) /
         target_count;
}

}  // namespace vlm
