#include "trainer/validation.h"

#include <algorithm>
#include <cmath>
#include <set>

#include "comm/fault_injection.h"
#include "comm/peer_monitor.h"
#include "data/idx.h"
#include "data/batch.h"
#include "model/losses.h"
#include "proto/config_loader.h"

namespace vlm {
namespace {

const char* metric_name(EvalConfig::Metric which) { return EvalConfig::Metric_Name(which).c_str(); }

bool lower_is_better(EvalConfig::Metric which) { return which == EvalConfig::CONTRASTIVE_LOSS; }

std::vector<int64_t> sample_indices(int64_t start, int64_t end) {
  std::vector<int64_t> out;
  for (int64_t i = start; i < end; ++i) out.push_back(i);
  return out;
}

}  // namespace

std::string zero_shot_prompt(const std::string& pattern, const std::string& class_name) {
  const bool vowel = !class_name.empty() && std::string("aeiouAEIOU").find(class_name[0]) != std::string::npos;
  std::string out = pattern;
  for (size_t at; (at = out.find("{a}")) != std::string::npos;) out.replace(at, 3, vowel ? "an" : "a");
  for (size_t at; (at = out.find("{}")) != std::string::npos;) out.replace(at, 2, class_name);
  return out;
}

double chance_of_same_caption(const torch::Tensor& token_rows) {
  const torch::Tensor counts =
      std::get<2>(torch::unique_dim(token_rows.cpu(), 0, /*sorted=*/false, /*return_inverse=*/false,
                                    /*return_counts=*/true));
  const double n = static_cast<double>(token_rows.size(0));
  return counts.to(torch::kDouble).pow(2).sum().item<double>() / (n * n);
}

double ValidationResult::metric(EvalConfig::Metric which) const {
  switch (which) {
    case EvalConfig::CONTRASTIVE_LOSS: return contrastive_loss;
    case EvalConfig::IMAGE_TO_TEXT_R1: return image_to_text_r1;
    case EvalConfig::TEXT_TO_IMAGE_R1: return text_to_image_r1;
    case EvalConfig::ZERO_SHOT_ACCURACY:
      if (zero_shot_samples == 0) {
        throw ConfigError("eval.best_metric is ZERO_SHOT_ACCURACY, but no held-out sample names a class (a "
                        "<key>.json {\"class\": ...} member). HINT: choose another eval.best_metric");
      }
      return zero_shot_accuracy;
  }
  return contrastive_loss;
}

std::string ValidationResult::summary() const {
  char text[512];
  std::snprintf(text, sizeof text,
                "validation at step %lld: contrastive loss %.4f, R@1 image->text %.4f text->image %.4f (%lld "
                "held-out samples, chance %.4f)",
                static_cast<long long>(step), contrastive_loss, image_to_text_r1, text_to_image_r1,
                static_cast<long long>(samples), r1_chance);
  std::string out = text;
  if (zero_shot_samples > 0) {
    std::snprintf(text, sizeof text, ", zero-shot accuracy %.4f (%lld samples, %lld classes)", zero_shot_accuracy,
                  static_cast<long long>(zero_shot_samples), static_cast<long long>(zero_shot_classes));
    out += text;
  }
  return out;
}

Validator::Validator(const TrainSet& held_out, const Tokenizer& tokenizer, const EvalConfig& config)
    : held_out_(held_out),
      tokenizer_(tokenizer),
      config_(config),
      samples_(std::min<int64_t>(config.samples(), held_out.size())) {
  if (samples_ < 2) throw DataError("eval.shards: validation needs at least 2 held-out samples");
  // Before any batch is read, so that every rank sees the same names.
  const std::vector<std::string> names = held_out_.class_names(sample_indices(0, samples_));
  std::set<std::string> distinct(names.begin(), names.end());
  distinct.erase("");  // samples that name no class
  classes_.assign(distinct.begin(), distinct.end());
  if (classes_.empty() && config.best_metric() == EvalConfig::ZERO_SHOT_ACCURACY) {
    throw ConfigError("eval.best_metric is ZERO_SHOT_ACCURACY, but none of the first " + std::to_string(samples_) +
                    " held-out samples names a class (a <key>.json {\"class\": ...} member; the Fashion-MNIST PAIR "
                    "task has none). HINT: choose another eval.best_metric");
  }
}

ValidationResult Validator::run(VlmModel& model, int64_t step, Backend& group, Millis timeout) {
  set_phase("validation at step " + std::to_string(step));
  torch::NoGradGuard no_grad;
  model->eval();
  const torch::Device device = model->parameters().front().device();
  const int64_t n = samples_, batch_size = config_.batch_size(), max_tokens = model->spec().max_tokens;
  const int64_t embed = model->spec().embed_dim;
  const int rank = group.rank(), size = group.size();
  const bool zero_shot = !classes_.empty();
  torch::Tensor prompts;  // [classes, E]
  if (zero_shot) {
    std::vector<std::string> texts;
    for (const auto& c : classes_) texts.push_back(zero_shot_prompt(config_.zero_shot_prompt(), c));
    auto [tokens, lengths] = tokenize(tokenizer_, texts, max_tokens);
    prompts = model->text_embedding(model->encode_text(tokens.to(device)), lengths.to(device));
  }

  // Each rank embeds batches b with b mod size == rank; the rest of its rows stay zero.
  torch::Tensor embeddings = torch::zeros({n, 2 * embed});  // image, then text
  std::vector<std::pair<int64_t, torch::Tensor>> own_tokens;  // (first row, token rows) of each own batch
  double counts[5] = {0, 0, 0, 0, 0};  // loss sum, i->t hits, t->i hits, zero-shot hits, zero-shot samples
  for (int64_t start = 0, b = 0; start < n; start += batch_size, ++b) {
    if (b % size != rank) continue;
    const int64_t end = std::min(n, start + batch_size);
    const std::vector<int64_t> indices = sample_indices(start, end);
    const Batch batch = to_device(without_padding(held_out_.batch(indices, 0, max_tokens, false)), device);
    const torch::Tensor image = model->image_embedding(model->encode_image(batch.images));
    const torch::Tensor text = model->text_embedding(model->encode_text(batch.tokens), batch.lengths);
    embeddings.narrow(0, start, end - start).copy_(torch::cat({image, text}, 1));
    own_tokens.emplace_back(start, batch.tokens.cpu());
    if (zero_shot) {
      // After batch(): a damaged sample's replacement names its own class.
      const std::vector<std::string> names = held_out_.class_names(indices);
      const torch::Tensor predicted = torch::matmul(image, prompts.t()).argmax(1).cpu();
      const int64_t* guess = predicted.data_ptr<int64_t>();
      for (int64_t i = 0; i < end - start; ++i) {
        const auto found = std::lower_bound(classes_.begin(), classes_.end(), names[static_cast<size_t>(i)]);
        if (found == classes_.end() || *found != names[static_cast<size_t>(i)]) continue;  // names no class ("")
        counts[4] += 1;
        counts[3] += guess[i] == found - classes_.begin();
      }
    }
    fault_point("evaluation");  // a test stops a rank here
  }
  group.allreduce(embeddings, {ReduceOp::kSum, timeout})->wait();
  // Token rows as wide as the longest held-out caption, not max_tokens: the columns past it are padding.
  int64_t width = 1;
  for (const auto& [start, rows] : own_tokens) width = std::max(width, rows.size(1));
  torch::Tensor widest = torch::full({1}, width, torch::kLong);
  group.allreduce(widest, {ReduceOp::kMax, timeout})->wait();
  torch::Tensor tokens = torch::zeros({n, widest.item<int64_t>()}, torch::kLong);  // padding is 0
  for (const auto& [start, rows] : own_tokens) {
    tokens.narrow(0, start, rows.size(0)).narrow(1, 0, rows.size(1)).copy_(rows);
  }
  group.allreduce(tokens, {ReduceOp::kSum, timeout})->wait();

  // Each rank scores blocks of rows: InfoNCE terms and retrievals, both ways.
  const torch::Tensor all = embeddings.to(device);
  const torch::Tensor images = all.narrow(1, 0, embed), texts = all.narrow(1, embed, embed);
  const torch::Tensor token_rows = tokens.to(device);
  const double scale = std::exp(std::min(model->logit_scale.item<double>(), kMaxLogLogitScale));
  for (int64_t start = 0, b = 0; start < n; start += batch_size, ++b) {
    if (b % size != rank) continue;
    const int64_t rows = std::min(n, start + batch_size) - start;
    const torch::Tensor own_tokens = token_rows.narrow(0, start, rows);
    for (int way = 0; way < 2; ++way) {  // 0: images query texts, 1: texts query images
      const torch::Tensor query = (way == 0 ? images : texts).narrow(0, start, rows);
      const torch::Tensor keys = way == 0 ? texts : images;
      const torch::Tensor logits = torch::matmul(query, keys.t()) * scale;  // [rows, n]
      const torch::Tensor matching = logits.diagonal(start);                // the pairs themselves
      counts[0] += (torch::logsumexp(logits, 1) - matching).sum().item<double>();
      const torch::Tensor found = token_rows.index_select(0, logits.argmax(1));
      counts[1 + way] += found.eq(own_tokens).all(1).sum().item<double>();
    }
  }
  torch::Tensor sums = torch::from_blob(counts, {5}, torch::kDouble).clone();
  group.allreduce(sums, {ReduceOp::kSum, timeout})->wait();
  const double* s = sums.data_ptr<double>();
  ValidationResult r;
  r.step = step;
  r.samples = n;
  r.contrastive_loss = s[0] / (2.0 * static_cast<double>(n));
  r.image_to_text_r1 = s[1] / static_cast<double>(n);
  r.text_to_image_r1 = s[2] / static_cast<double>(n);
  r.r1_chance = chance_of_same_caption(tokens);  // the host copy: no read back from a GPU
  r.zero_shot_samples = static_cast<int64_t>(s[4]);
  r.zero_shot_classes = static_cast<int64_t>(classes_.size());
  r.zero_shot_accuracy = s[4] > 0 ? s[3] / s[4] : 0.0;
  return r;
}

void BestTracker::restore(const ValidationRecord& best, int64_t samples) {
  // Another metric, or another held-out set: not comparable, start over.
  if (best.best_metric() != EvalConfig::Metric_Name(metric_) || best.samples() != samples) return;
  ValidationResult r;
  r.contrastive_loss = best.contrastive_loss();
  r.image_to_text_r1 = best.image_to_text_r1();
  r.text_to_image_r1 = best.text_to_image_r1();
  r.zero_shot_samples = best.zero_shot_samples();
  r.zero_shot_accuracy = best.zero_shot_accuracy();
  have_ = true;
  best_ = r.metric(metric_);
}

bool BestTracker::offer(const ValidationResult& result) {
  const double value = result.metric(metric_);
  if (!std::isfinite(value)) return false;  // a diverged model is never the best
  const bool better = !have_ || (lower_is_better(metric_) ? value < best_ : value > best_);
  if (better) have_ = true, best_ = value;
  return better;
}

ValidationRecord BestTracker::record(const ValidationResult& r, bool best) const {
  ValidationRecord out;
  out.set_samples(r.samples);
  out.set_contrastive_loss(r.contrastive_loss);
  out.set_image_to_text_r1(r.image_to_text_r1);
  out.set_text_to_image_r1(r.text_to_image_r1);
  out.set_zero_shot_samples(r.zero_shot_samples);
  out.set_zero_shot_accuracy(r.zero_shot_accuracy);
  out.set_best_metric(metric_name(metric_));
  out.set_best(best);
  return out;
}

}  // namespace vlm
