#include "trainer/evaluate.h"

#include <algorithm>

#include "comm/fault_injection.h"
#include "comm/peer_monitor.h"
#include "data/batch.h"
#include "model/caption.h"

namespace vlm {
namespace {

// Evaluation runs where the model is, in float32.
Batch batch_for(VlmModel& model, const Task& task, const TrainingData& data, const std::vector<Sample>& samples) {
  const torch::Device device = model->parameters().front().device();
  const Batch batch = make_batch(task, *data.tokenizer, samples, model->spec().max_tokens, device.is_cuda());
  return to_device(without_padding(batch), device);
}

// Unit-norm text embeddings of `captions`, [C, E].
torch::Tensor embed_captions(VlmModel& model, const Task& task, const TrainingData& data,
                             const std::vector<std::string>& captions) {
  std::vector<Sample> samples;
  for (const auto& c : captions) samples.push_back({0, -1, c});
  const Batch batch = batch_for(model, task, data, samples);
  return model->text_embedding(model->encode_text(batch.tokens), batch.lengths);
}

torch::Tensor embed_images(VlmModel& model, const Task& task, const TrainingData& data,
                           const std::vector<Sample>& samples) {
  const Batch batch = batch_for(model, task, data, samples);
  return model->image_embedding(model->encode_image(batch.images));
}

bool has_singles(TaskKind kind) { return kind != TaskKind::kPair; }
bool has_pairs(TaskKind kind) { return kind != TaskKind::kSingle; }

}  // namespace

int64_t EvalShare::sum(int64_t count) const {
  torch::Tensor total = torch::full({1}, count, torch::kLong);
  group_.allreduce(total, {ReduceOp::kSum, timeout_})->wait();
  return total.item<int64_t>();
}

double zero_shot_accuracy(VlmModel& model, const TrainingData& data, int64_t batch_size, const EvalShare& share) {
  torch::NoGradGuard no_grad;
  model->eval();
  const Task test(data.kind, data.test, data.test.size(), 0);
  std::vector<std::string> prompts;
  for (int64_t c = 0; c < kFashionClasses; ++c) prompts.push_back(single_caption(c, 0));
  torch::Tensor text = embed_captions(model, test, data, prompts);
  int64_t correct = 0;
  for (int64_t start = 0; start < data.test.size(); start += batch_size) {
    if (!share.mine(start / batch_size)) continue;
    const int64_t end = std::min(data.test.size(), start + batch_size);
    std::vector<Sample> samples;
    for (int64_t i = start; i < end; ++i) samples.push_back({i, -1, prompts[0]});
    torch::Tensor predicted = torch::matmul(embed_images(model, test, data, samples), text.t()).argmax(1).cpu();
    correct += predicted.eq(data.test.labels.narrow(0, start, end - start)).sum().item<int64_t>();
    fault_point("evaluation");  // a test stops a rank here
  }
  return static_cast<double>(share.sum(correct)) / static_cast<double>(data.test.size());
}

std::pair<double, double> pair_retrieval_r1(VlmModel& model, const TrainingData& data, uint64_t seed) {
  torch::NoGradGuard no_grad;
  model->eval();
  const Task test(TaskKind::kPair, data.test, 0, 0);
  // Test items of each class, then one random held-out pair per ordered class pair.
  std::vector<std::vector<int64_t>> by_class(kFashionClasses);
  const auto* labels = data.test.labels.data_ptr<int64_t>();
  for (int64_t i = 0; i < data.test.size(); ++i) by_class[labels[i]].push_back(i);
  std::vector<Sample> pairs;
  std::vector<std::string> captions;
  for (int64_t a = 0; a < kFashionClasses; ++a) {
    for (int64_t b = 0; b < kFashionClasses; ++b) {
      const uint64_t r = mix_seed(seed, static_cast<uint64_t>(a * kFashionClasses + b));
      const int64_t left = by_class[a][mix_seed(r, 1) % by_class[a].size()];
      const int64_t right = by_class[b][mix_seed(r, 2) % by_class[b].size()];
      captions.push_back(pair_caption(a, b));
      pairs.push_back({left, right, captions.back()});
    }
  }
  torch::Tensor similarity =
      torch::matmul(embed_images(model, test, data, pairs), embed_captions(model, test, data, captions).t());
  torch::Tensor truth = torch::arange(similarity.size(0), torch::TensorOptions(similarity.device()).dtype(torch::kLong));
  const double n = static_cast<double>(similarity.size(0));
  return {similarity.argmax(1).eq(truth).sum().item<double>() / n,
          similarity.argmax(0).eq(truth).sum().item<double>() / n};
}

double caption_exact_match(VlmModel& model, const TrainingData& data, int64_t samples, int64_t batch_size,
                           uint64_t seed, const EvalShare& share, const Sampling& sampling) {
  torch::NoGradGuard no_grad;
  model->eval();
  const Task test(data.kind, data.test, samples, seed);
  const CaptionTokens ids{WordTokenizer::kBos, WordTokenizer::kEos, WordTokenizer::kPad};
  int64_t correct = 0;
  for (int64_t start = 0; start < samples; start += batch_size) {
    if (!share.mine(start / batch_size)) continue;
    const int64_t end = std::min(samples, start + batch_size);
    std::vector<Sample> batch_samples;
    for (int64_t i = start; i < end; ++i) batch_samples.push_back(test.sample(i));
    const Batch batch = batch_for(model, test, data, batch_samples);
    const torch::Tensor captions = decode_captions(model, batch.images, ids, sampling, start).cpu().contiguous();
    for (int64_t i = 0; i < end - start; ++i) {
      const std::string text = data.tokenizer->decode(captions[i].data_ptr<int64_t>(), captions.size(1));
      const auto valid = test.valid_captions(batch_samples[i]);
      correct += std::find(valid.begin(), valid.end(), text) != valid.end();
    }
    fault_point("evaluation");
  }
  correct = share.sum(correct);
  return samples == 0 ? 0.0 : static_cast<double>(correct) / static_cast<double>(samples);
}

EvalResult evaluate(VlmModel& model, const TrainingData& data, const EvalConfig& config, Backend& group,
                    Millis timeout) {
  set_phase("evaluation");
  const EvalShare share(group, timeout);
  EvalResult r;
  if (has_singles(data.kind)) {
    r.zero_shot_images = data.test.size();
    r.zero_shot_accuracy = zero_shot_accuracy(model, data, config.batch_size(), share);
  }
  if (has_pairs(data.kind)) {
    r.retrieval_pairs = kFashionClasses * kFashionClasses;
    std::tie(r.image_to_text_r1, r.text_to_image_r1) =
        pair_retrieval_r1(model, data, static_cast<uint64_t>(config.seed()));
  }
  r.caption_samples = config.caption_samples();
  r.caption_exact_match = caption_exact_match(model, data, config.caption_samples(), config.batch_size(),
                                              static_cast<uint64_t>(config.seed()), share);
  return r;
}

std::string EvalResult::summary() const {
  char text[512];
  std::string out = "evaluation (Fashion-MNIST test split)\n";
  if (zero_shot_images > 0) {
    std::snprintf(text, sizeof text, "  zero-shot accuracy   %.4f  (%lld images, 10 prompts, chance 0.10)\n",
                  zero_shot_accuracy, static_cast<long long>(zero_shot_images));
    out += text;
  } else {
    out += "  zero-shot accuracy   n/a (the PAIR task has no single items)\n";
  }
  if (retrieval_pairs > 0) {
    std::snprintf(text, sizeof text,
                  "  retrieval R@1        image->text %.4f  text->image %.4f  (%lld held-out pairs, chance %.2f)\n",
                  image_to_text_r1, text_to_image_r1, static_cast<long long>(retrieval_pairs),
                  1.0 / static_cast<double>(retrieval_pairs));
    out += text;
  } else {
    out += "  retrieval R@1        n/a (the SINGLE task has no pairs with distinct captions)\n";
  }
  if (caption_samples == 0) return out + "  caption exact match  n/a (eval.caption_samples is 0)\n";
  std::snprintf(text, sizeof text, "  caption exact match  %.4f  (%lld held-out samples, KV-cached greedy)\n",
                caption_exact_match, static_cast<long long>(caption_samples));
  return out + text;
}

}  // namespace vlm
