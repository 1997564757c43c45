// The prefetching loader: the same batches with or without threads, across
// epochs and micro-batches, after a jump (a resume), and errors carried to
// the step that asked.

#include <gtest/gtest.h>

#include <stdexcept>

#include "data/fashion_mnist.h"
#include "data/loader.h"
#include "data/task.h"
#include "data/train_set.h"

namespace vlm {
namespace {

const FashionMnist& test_items() {
  static const FashionMnist items = load_fashion_mnist("/usr/share/datasets/fashion-mnist", Split::kTest);
  return items;
}

constexpr int64_t kSamples = 300, kGlobalBatch = 32, kMicro = 2;

std::unique_ptr<Loader> loader_over(const TrainSet& set, int threads, int dp_size = 1, int dp_rank = 0,
                                    LoaderOptions options = {}) {
  options.threads = threads;
  options.depth = 3;
  options.micro_batches = kMicro;
  return std::make_unique<Loader>(set, DistributedSampler(kSamples, kGlobalBatch, dp_size, dp_rank, 9, kMicro),
                                  DistributedSampler(kSamples, kGlobalBatch, 1, 0, 9, kMicro), options);
}

void expect_same(const LoadedBatch& a, const LoadedBatch& b, const std::string& where) {
  EXPECT_TRUE(torch::equal(a.batch.images, b.batch.images)) << where;
  EXPECT_TRUE(torch::equal(a.batch.tokens, b.batch.tokens)) << where;
  EXPECT_TRUE(torch::equal(a.batch.lengths, b.batch.lengths)) << where;
  EXPECT_EQ(a.global.targets, b.global.targets) << where;
  EXPECT_EQ(a.global.longest, b.global.longest) << where;
}

TEST(Loader, ThreadsChangeNothingAcrossEpochsAndMicroBatches) {
  const Task task(TaskKind::kMixed, test_items(), kSamples, 4);
  const WordTokenizer tokenizer(caption_words());
  const TaskTrainSet set(task, tokenizer);
  auto inline_loader = loader_over(set, 0), threaded = loader_over(set, 3);
  // 300 / 32 = 9 steps per epoch: 20 steps cross two epoch boundaries.
  for (int64_t step = 0; step < 20; ++step) {
    for (int micro = 0; micro < kMicro; ++micro) {
      const LoadedBatch a = inline_loader->get(step, micro), b = threaded->get(step, micro);
      expect_same(a, b, "step " + std::to_string(step) + " micro " + std::to_string(micro));
      EXPECT_EQ(a.batch.size(), kGlobalBatch / kMicro);
    }
  }
}

TEST(Loader, ARankTakesItsShareOfTheGlobalBatch) {
  const Task task(TaskKind::kPair, test_items(), kSamples, 4);
  const WordTokenizer tokenizer(caption_words());
  const TaskTrainSet set(task, tokenizer);
  auto whole = loader_over(set, 1), rank0 = loader_over(set, 1, 2, 0), rank1 = loader_over(set, 2, 2, 1);
  for (int64_t step = 0; step < 3; ++step) {
    const LoadedBatch w = whole->get(step, 0), r0 = rank0->get(step, 0), r1 = rank1->get(step, 0);
    // Rank r holds every second sample of the global micro-batch, starting at r.
    EXPECT_TRUE(torch::equal(r0.batch.tokens, w.batch.tokens.slice(0, 0, 16, 2)));
    EXPECT_TRUE(torch::equal(r1.batch.images, w.batch.images.slice(0, 1, 16, 2)));
    EXPECT_EQ(r0.global.targets, w.global.targets);
    EXPECT_EQ(r0.global.longest, w.global.longest);
  }
}

// Padding columns are dropped: a batch is as wide as the global micro-batch's
// longest caption, on every rank, and holds what the padded batch holds there.
TEST(Loader, BatchesAreAsWideAsTheLongestCaptionOfTheGlobalMicroBatch) {
  const Task task(TaskKind::kMixed, test_items(), kSamples, 4);
  const WordTokenizer tokenizer(caption_words());
  const TaskTrainSet set(task, tokenizer);
  LoaderOptions wide;
  wide.max_tokens = 64;
  auto cut0 = loader_over(set, 1, 2, 0, wide), cut1 = loader_over(set, 0, 2, 1, wide);
  DistributedSampler rank0(kSamples, kGlobalBatch, 2, 0, 9, kMicro);
  for (int64_t step = 0; step < 4; ++step) {
    const LoadedBatch a = cut0->get(step, 0), b = cut1->get(step, 0);
    const Batch full = set.batch(rank0.indices(step, 0), 0, 64, false);  // as the set makes it: padded
    const int64_t longest = a.global.longest;
    EXPECT_LT(longest, 64);
    EXPECT_EQ(a.batch.tokens.size(1), longest);
    EXPECT_EQ(b.batch.tokens.size(1), longest) << "the same width on every rank";
    EXPECT_TRUE(a.batch.tokens.is_contiguous());
    EXPECT_EQ(full.tokens.size(1), 64);
    EXPECT_TRUE(torch::equal(a.batch.tokens, full.tokens.narrow(1, 0, longest)));
    EXPECT_EQ(full.tokens.narrow(1, longest, 64 - longest).count_nonzero().item<int64_t>(), 0) << "only padding cut";
    EXPECT_TRUE(torch::equal(a.batch.lengths, full.lengths));
  }
}

TEST(Loader, AJumpStartsOverFromTheStepAskedFor) {
  const Task task(TaskKind::kMixed, test_items(), kSamples, 4);
  const WordTokenizer tokenizer(caption_words());
  const TaskTrainSet set(task, tokenizer);
  auto jumping = loader_over(set, 2), fresh = loader_over(set, 0);
  jumping->get(0, 0);
  jumping->get(0, 1);
  jumping->get(1, 0);  // the workers are building ahead of step 1 now
  expect_same(jumping->get(12, 1), fresh->get(12, 1), "after a jump forward");
  expect_same(jumping->get(13, 0), fresh->get(13, 0), "the step after");
  expect_same(jumping->get(2, 0), fresh->get(2, 0), "after a jump back");
}

// Fails on one sample: the error must reach the caller of get().
class FailingSet : public TrainSet {
 public:
  explicit FailingSet(const TrainSet& inner) : inner_(inner) {}
  int64_t size() const override { return inner_.size(); }
  const ImageFormat& format() const override { return inner_.format(); }
  Batch batch(const std::vector<int64_t>& indices, int64_t epoch, int64_t max_tokens, bool pinned) const override {
    for (int64_t i : indices) {
      if (i == 17) throw std::runtime_error("sample 17 is unreadable");
    }
    return inner_.batch(indices, epoch, max_tokens, pinned);
  }
  CaptionCounts caption_counts(const std::vector<int64_t>& indices, int64_t max_tokens) const override {
    return inner_.caption_counts(indices, max_tokens);
  }
  std::vector<std::string> class_names(const std::vector<int64_t>& indices) const override {
    return inner_.class_names(indices);
  }

 private:
  const TrainSet& inner_;
};

TEST(Loader, ABuildErrorReachesTheStepThatNeedsIt) {
  const Task task(TaskKind::kSingle, test_items(), kSamples, 4);
  const WordTokenizer tokenizer(caption_words());
  const TaskTrainSet inner(task, tokenizer);
  const FailingSet set(inner);
  for (int threads : {0, 2}) {
    auto loader = loader_over(set, threads);
    bool thrown = false;
    for (int64_t step = 0; step < 9 && !thrown; ++step) {
      for (int micro = 0; micro < kMicro && !thrown; ++micro) {
        try {
          loader->get(step, micro);
        } catch (const std::runtime_error& e) {
          EXPECT_STREQ(e.what(), "sample 17 is unreadable");
          thrown = true;
        }
      }
    }
    EXPECT_TRUE(thrown) << threads << " threads: sample 17 is in the first epoch, so some get() must throw";
  }
}

}  // namespace
}  // namespace vlm
