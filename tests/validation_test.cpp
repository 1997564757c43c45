// Validation (trainer/validation.h) against a plain computation: one forward
// pass over every held-out sample, the training loss's InfoNCE
// (model/losses.h), and retrievals scored by comparing caption strings. Run
// on 1 and 3 ranks (uneven shares of the batches): every rank must get the
// reference's result.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <numeric>

#include "comm/mpi_backend.h"
#include "data/batch.h"
#include "data/idx.h"
#include "model/losses.h"
#include "mpi_test_support.h"
#include "proto/config_loader.h"
#include "trainer/setup.h"
#include "trainer/validation.h"

namespace vlm {
namespace {

TEST(Validation, EqualsAPlainComputationOnAnyNumberOfRanks) {
  const TrainingData& data = tiny_data();
  const TrainConfig train = load_config(std::string(VLM_SOURCE_DIR) + "/configs/tiny_test.pbtxt");
  // MIXED: single items (a class each; captions shared by many) and pairs.
  const int64_t n = 300;
  const Task task(TaskKind::kMixed, data.test, n, 11);
  const TaskTrainSet held_out(task, *data.tokenizer);
  EvalConfig config;
  config.set_samples(n);
  config.set_batch_size(64);  // 5 batches: uneven shares on 3 ranks
  torch::manual_seed(5);
  VlmModel model(model_spec_for(train, data));
  MpiBackend world(MPI_COMM_WORLD, "world");
  Validator validator(held_out, *data.tokenizer, config);
  const ValidationResult r = validator.run(model, 0, world, Millis(60000));

  torch::NoGradGuard no_grad;
  std::vector<int64_t> all(n);
  std::iota(all.begin(), all.end(), 0);
  const Batch batch = held_out.batch(all, 0, model->spec().max_tokens, false);
  const torch::Tensor image = model->image_embedding(model->encode_image(batch.images));
  const torch::Tensor text = model->text_embedding(model->encode_text(batch.tokens), batch.lengths);
  EXPECT_NEAR(r.contrastive_loss, contrastive_loss(image, text, model->logit_scale).item<double>(), 1e-4);

  std::vector<std::string> captions;
  for (int64_t i = 0; i < n; ++i) captions.push_back(task.sample(i).caption);
  const torch::Tensor similarity = torch::matmul(image, text.t());
  const torch::Tensor text_found = similarity.argmax(1), image_found = similarity.argmax(0);
  double i2t = 0, t2i = 0;
  for (int64_t i = 0; i < n; ++i) {
    i2t += captions[text_found[i].item<int64_t>()] == captions[i];
    t2i += captions[image_found[i].item<int64_t>()] == captions[i];
  }
  // Batches of 64 and of 300 may round differently: one argmax may flip.
  EXPECT_NEAR(r.image_to_text_r1, i2t / n, 1.0 / n + 1e-12);
  EXPECT_NEAR(r.text_to_image_r1, t2i / n, 1.0 / n + 1e-12);

  // Zero-shot: one prompt per class present, as the built-in captions word it.
  std::map<std::string, int64_t> label_of;
  const auto* labels = data.test.labels.data_ptr<int64_t>();
  std::vector<int64_t> singles;
  for (int64_t i = 0; i < n; ++i) {
    const Sample s = task.sample(i);
    if (s.right >= 0) continue;
    singles.push_back(i);
    label_of[kFashionClassNames[labels[s.left]]] = labels[s.left];
  }
  std::vector<std::string> prompts;
  for (const auto& [name, label] : label_of) {
    prompts.push_back(single_caption(label, 0));
    EXPECT_EQ(zero_shot_prompt(config.zero_shot_prompt(), name), prompts.back());
  }
  auto [tokens, lengths] = tokenize(*data.tokenizer, prompts, model->spec().max_tokens);
  const torch::Tensor predicted =
      torch::matmul(image, model->text_embedding(model->encode_text(tokens), lengths).t()).argmax(1);
  double hits = 0;
  for (int64_t i : singles) {
    hits += std::next(label_of.begin(), predicted[i].item<int64_t>())->second == labels[task.sample(i).left];
  }
  ASSERT_EQ(r.zero_shot_samples, static_cast<int64_t>(singles.size()));
  EXPECT_EQ(r.zero_shot_classes, static_cast<int64_t>(label_of.size()));
  EXPECT_NEAR(r.zero_shot_accuracy, hits / static_cast<double>(singles.size()), 1.0 / singles.size() + 1e-12);
}

TEST(Validation, TheBestIsLowestLossOrHighestRecallAndSurvivesARestore) {
  ValidationResult a, b;
  a.contrastive_loss = 2.0, a.image_to_text_r1 = 0.3;
  b.contrastive_loss = 2.5, b.image_to_text_r1 = 0.4;
  BestTracker loss(EvalConfig::CONTRASTIVE_LOSS), recall(EvalConfig::IMAGE_TO_TEXT_R1);
  EXPECT_TRUE(loss.offer(a));
  EXPECT_FALSE(loss.offer(b));
  EXPECT_TRUE(recall.offer(a));
  EXPECT_TRUE(recall.offer(b));
  EXPECT_FALSE(recall.offer(b)) << "a tie is not better";
  BestTracker resumed(EvalConfig::IMAGE_TO_TEXT_R1);
  resumed.restore(recall.record(b, true), 0);
  EXPECT_FALSE(resumed.offer(a));
  BestTracker other(EvalConfig::CONTRASTIVE_LOSS);
  other.restore(recall.record(b, true), 0);  // recorded for another metric: starts over
  EXPECT_TRUE(other.offer(b));
  BestTracker zero_shot(EvalConfig::ZERO_SHOT_ACCURACY);
  EXPECT_THROW(zero_shot.offer(a), ConfigError) << "no sample names a class";
  ValidationResult diverged;
  diverged.contrastive_loss = std::nan("");
  BestTracker first(EvalConfig::CONTRASTIVE_LOSS);
  EXPECT_FALSE(first.offer(diverged)) << "not finite: never the best";
  EXPECT_TRUE(first.offer(b));
  BestTracker other_set(EvalConfig::IMAGE_TO_TEXT_R1);
  other_set.restore(recall.record(b, true), /*samples=*/99);  // recorded over another held-out set
  EXPECT_TRUE(other_set.offer(a));
}

// R@1's chance counts equal captions: rows {a, a, b, c} -> (2/4)^2 + (1/4)^2 + (1/4)^2.
TEST(Validation, RecallChanceIsTheShareOfPairsWithEqualCaptions) {
  const torch::Tensor rows = torch::tensor({1, 2, 1, 2, 3, 4, 5, 6}, torch::kLong).view({4, 2});
  EXPECT_DOUBLE_EQ(chance_of_same_caption(rows), 0.375);
  EXPECT_DOUBLE_EQ(chance_of_same_caption(torch::arange(10, torch::kLong).view({5, 2})), 0.2);  // all differ: 1/n
}

// Zero-shot accuracy as eval.best_metric with no class names is refused before training.
TEST(Validation, ZeroShotAsTheBestMetricNeedsClassNames) {
  const TrainingData& data = tiny_data();
  const Task pairs(TaskKind::kPair, data.test, 50, 3);
  const TaskTrainSet held_out(pairs, *data.tokenizer);
  EvalConfig config;
  config.set_best_metric(EvalConfig::ZERO_SHOT_ACCURACY);
  EXPECT_THROW(Validator(held_out, *data.tokenizer, config), ConfigError);
  config.set_best_metric(EvalConfig::IMAGE_TO_TEXT_R1);
  EXPECT_NO_THROW(Validator(held_out, *data.tokenizer, config));
}

}  // namespace
}  // namespace vlm
