// Fashion-MNIST reading, tasks, tokenizer, batches and the distributed sampler.

#include <gtest/gtest.h>
#include <unistd.h>
#include <zlib.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "data/batch.h"
#include "data/fashion_mnist.h"
#include "data/idx.h"
#include "data/sampler.h"
#include "data/sentencepiece_tokenizer.h"
#include "data/task.h"
#include "data/tokenizer.h"

namespace vlm {
namespace {

const char* kDataDir = "/usr/share/datasets/fashion-mnist";

const FashionMnist& test_split() {
  static const FashionMnist split = load_fashion_mnist(kDataDir, Split::kTest);
  return split;
}

TEST(FashionMnist, SplitsHaveTheirShapesAndBalancedLabels) {
  const FashionMnist train = load_fashion_mnist(kDataDir, Split::kTrain);
  EXPECT_EQ(train.images.sizes(), (std::vector<int64_t>{60000, 28, 28}));
  EXPECT_EQ(test_split().images.sizes(), (std::vector<int64_t>{10000, 28, 28}));
  EXPECT_TRUE(torch::bincount(train.labels).eq(6000).all().item<bool>());
  EXPECT_TRUE(torch::bincount(test_split().labels).eq(1000).all().item<bool>());
  EXPECT_EQ(train.labels[0].item<int64_t>(), 9);  // the first training item is an ankle boot
}

class CorruptIdx : public ::testing::Test {
 protected:
  std::string dir_ = (std::filesystem::temp_directory_path() / ("vlm_idx_" + std::to_string(getpid()))).string();
  void SetUp() override { std::filesystem::create_directories(dir_); }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string write_gz(const std::string& name, const std::vector<uint8_t>& bytes) {
    const std::string path = dir_ + "/" + name;
    gzFile f = gzopen(path.c_str(), "wb");
    gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size()));
    gzclose(f);
    return path;
  }
  static std::string error_of(const std::function<void()>& read) {
    try {
      read();
    } catch (const DataError& e) {
      return e.what();
    }
    return "(no error)";
  }
};

TEST_F(CorruptIdx, BadMagicNamesTheFile) {
  const std::string path = write_gz("a.gz", {0, 0, 8, 1, 0, 0, 0, 1, 5});
  const std::string e = error_of([&] { read_idx_images(path); });
  EXPECT_NE(e.find(path + ": bad magic number 0x00000801, expected 0x00000803"), std::string::npos) << e;
}

TEST_F(CorruptIdx, TruncatedPixels) {
  std::vector<uint8_t> bytes = {0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 28, 0, 0, 0, 28};
  bytes.resize(bytes.size() + 28 * 28 + 10);  // 1.01 images of 2
  const std::string path = write_gz("b.gz", bytes);
  const std::string e = error_of([&] { read_idx_images(path); });
  EXPECT_NE(e.find(path + ": truncated: expected 1568 bytes of pixels, found 794"), std::string::npos) << e;
}

TEST_F(CorruptIdx, LabelOutOfRangeAndTrailingData) {
  const std::string labels = write_gz("c.gz", {0, 0, 8, 1, 0, 0, 0, 2, 3, 12});
  EXPECT_NE(error_of([&] { read_idx_labels(labels, 10); }).find("label 12 out of range [0, 10)"), std::string::npos);
  const std::string trailing = write_gz("d.gz", {0, 0, 8, 1, 0, 0, 0, 1, 3, 4});
  EXPECT_NE(error_of([&] { read_idx_labels(trailing, 10); }).find("unexpected data after the last item"),
            std::string::npos);
}

TEST_F(CorruptIdx, MissingFileHintsAtThePackage) {
  const std::string e = error_of([&] { load_fashion_mnist(dir_, Split::kTest); });
  EXPECT_NE(e.find("cannot open"), std::string::npos) << e;
  EXPECT_NE(e.find("dataset-fashion-mnist"), std::string::npos) << e;
}

TEST(Tokenizer, RoundTripAndUnknownWords) {
  const WordTokenizer tok(caption_words());
  const std::vector<int64_t> ids = tok.encode("an ankle boot left of a coat");
  EXPECT_EQ(ids.front(), WordTokenizer::kBos);
  EXPECT_EQ(ids.back(), WordTokenizer::kEos);
  EXPECT_EQ(ids.size(), 9u);
  EXPECT_EQ(tok.decode(ids.data(), static_cast<int64_t>(ids.size())), "an ankle boot left of a coat");
  EXPECT_EQ(tok.encode("a zebra")[2], WordTokenizer::kUnk);
  EXPECT_EQ(WordTokenizer(caption_words()).encode("a coat"), tok.encode("a coat"));  // deterministic ids
}

// A SentencePiece model trained from the task's captions: the special ids
// every tokenizer shares, no <unk> for words it has seen, text back on decode.
TEST(SentencePiece, TrainsFromCaptionsAndRoundTrips) {
  std::vector<std::string> captions;
  for (int64_t a = 0; a < kFashionClasses; ++a) {
    for (int t = 0; t < kSingleTemplates; ++t) captions.push_back(single_caption(a, t));
    for (int64_t b = 0; b < kFashionClasses; ++b) captions.push_back(pair_caption(a, b));
  }
  const std::string path = (std::filesystem::temp_directory_path() / ("vlm_sp_" + std::to_string(::getpid()) + ".model")).string();
  const int vocab = train_tokenizer(captions, {60, "unigram"}, path);
  EXPECT_GT(vocab, 20);
  EXPECT_LE(vocab, 60);
  const SentencePieceTokenizer tok(path);
  EXPECT_EQ(tok.vocab_size(), vocab);
  const std::vector<int64_t> ids = tok.encode("an ankle boot left of a coat");
  EXPECT_EQ(ids.front(), Tokenizer::kBos);
  EXPECT_EQ(ids.back(), Tokenizer::kEos);
  for (size_t i = 1; i + 1 < ids.size(); ++i) EXPECT_GT(ids[i], Tokenizer::kUnk) << i;
  EXPECT_EQ(tok.decode(ids.data(), static_cast<int64_t>(ids.size())), "an ankle boot left of a coat");
  std::vector<int64_t> padded = ids;
  padded.push_back(Tokenizer::kPad);
  EXPECT_EQ(tok.decode(padded.data(), static_cast<int64_t>(padded.size())), "an ankle boot left of a coat");
  EXPECT_FALSE(std::filesystem::exists(path + ".partial"));
  std::filesystem::remove(path);
}

TEST(SentencePiece, BadModelFilesAreNamed) {
  try {
    SentencePieceTokenizer tok("/nonexistent/tok.model");
    ADD_FAILURE() << "a missing model loaded";
  } catch (const DataError& e) {
    EXPECT_NE(std::string(e.what()).find("data.tokenizer_model /nonexistent/tok.model"), std::string::npos) << e.what();
  }
  const std::string garbage = (std::filesystem::temp_directory_path() / "vlm_sp_garbage.model").string();
  std::ofstream(garbage) << "not a model";
  EXPECT_THROW(SentencePieceTokenizer tok(garbage), DataError);
  std::filesystem::remove(garbage);
}

TEST(Task, PairCaptionsAreTheHundredOrderedClassPairs) {
  const Task task(TaskKind::kPair, test_split(), 5000, 11);
  std::set<std::string> captions;
  for (int64_t i = 0; i < task.size(); ++i) {
    const Sample s = task.sample(i);
    const auto* labels = test_split().labels.data_ptr<int64_t>();
    ASSERT_EQ(s.caption, pair_caption(labels[s.left], labels[s.right]));
    captions.insert(s.caption);
  }
  EXPECT_EQ(captions.size(), 100u);
  EXPECT_EQ(pair_caption(7, 4), "a sneaker left of a coat");
  EXPECT_NE(pair_caption(7, 4), pair_caption(4, 7));  // order matters
  EXPECT_EQ(task.sample(123).caption, Task(TaskKind::kPair, test_split(), 5000, 11).sample(123).caption);
}

TEST(Task, MixedHasBothKindsAndSingleUsesTemplates) {
  const Task mixed(TaskKind::kMixed, test_split(), 1000, 5);
  int singles = 0;
  for (int64_t i = 0; i < 1000; ++i) singles += mixed.sample(i).right < 0;
  EXPECT_GT(singles, 400);
  EXPECT_LT(singles, 600);
  const Task single(TaskKind::kSingle, test_split(), 100000, 5);
  EXPECT_EQ(single.size(), 10000);
  EXPECT_EQ(single.valid_captions(single.sample(0)).size(), static_cast<size_t>(kSingleTemplates));
}

TEST(Batch, ItemsAreDrawnInTheirSlots) {
  const Task task(TaskKind::kMixed, test_split(), 100, 5);
  const WordTokenizer tok(caption_words());
  const Sample pair{3, 8, pair_caption(1, 2)};
  const Sample single{4, -1, single_caption(0, 0)};
  const Batch b = make_batch(task, tok, {pair, single}, 12);
  EXPECT_EQ(b.images.sizes(), (std::vector<int64_t>{2, 1, 28, 56}));
  auto expected = [&](int64_t item) { return (test_split().images[item].to(torch::kFloat) / 255 - 0.2860) / 0.3530; };
  EXPECT_TRUE(torch::allclose(b.images[0][0].narrow(1, 0, 28), expected(3)));
  EXPECT_TRUE(torch::allclose(b.images[0][0].narrow(1, 28, 28), expected(8)));
  EXPECT_TRUE(torch::allclose(b.images[1][0].narrow(1, 28, 28), expected(8).mul(0).sub(0.2860 / 0.3530)));
  EXPECT_EQ(b.lengths[0].item<int64_t>(), 8);  // <bos> a trouser left of a pullover <eos>
  EXPECT_EQ(b.tokens[0][b.lengths[0].item<int64_t>()].item<int64_t>(), WordTokenizer::kPad);
}

TEST(Batch, TooLongCaptionNamesTheSetting) {
  const Task task(TaskKind::kPair, test_split(), 100, 5);
  try {
    make_batch(task, WordTokenizer(caption_words()), {task.sample(0)}, 5);
    FAIL();
  } catch (const DataError& e) {
    EXPECT_NE(std::string(e.what()).find("raise model.text.max_tokens"), std::string::npos);
  }
}

// Cut to its own longest caption, or to the global micro-batch's width: a
// longer caption there (a damaged sample's replacement) keeps <eos> last.
TEST(Batch, PaddingColumnsAreCut) {
  const Batch padded{torch::zeros({2, 1, 2, 2}), torch::tensor({1, 5, 2, 0, 0, 0, 0, 0, 1, 5, 6, 7, 8, 9, 2, 0}, torch::kLong).view({2, 8}),
                     torch::tensor({3, 7}, torch::kLong)};
  const Batch own = without_padding(padded);
  EXPECT_TRUE(torch::equal(own.tokens, padded.tokens.narrow(1, 0, 7)));
  EXPECT_TRUE(torch::equal(own.lengths, padded.lengths));
  const Batch global = without_padding(padded, 5);
  EXPECT_TRUE(torch::equal(global.tokens, torch::tensor({1, 5, 2, 0, 0, 1, 5, 6, 7, 2}, torch::kLong).view({2, 5})));
  EXPECT_TRUE(torch::equal(global.lengths, torch::tensor({3, 5}, torch::kLong)));
  EXPECT_TRUE(torch::equal(padded.lengths, torch::tensor({3, 7}, torch::kLong))) << "the batch cut is left as it was";
  EXPECT_EQ(without_padding(padded, 8).tokens.data_ptr(), padded.tokens.data_ptr()) << "nothing to cut: no copy";
}

TEST(Sampler, SharesAreDisjointEqualAndUnionIsTheGlobalBatch) {
  const int64_t n = 1003, global = 12;
  for (int64_t dp : {1, 2, 3, 4}) {
    std::vector<DistributedSampler> ranks;
    for (int64_t r = 0; r < dp; ++r) ranks.emplace_back(n, global, dp, r, 99);
    DistributedSampler single(n, global, 1, 0, 99);
    std::set<int64_t> epoch;
    for (int64_t step = 0; step < single.steps_per_epoch(); ++step) {
      std::vector<int64_t> all;
      for (auto& r : ranks) {
        auto share = r.indices(step);
        EXPECT_EQ(static_cast<int64_t>(share.size()), global / dp);
        all.insert(all.end(), share.begin(), share.end());
      }
      auto reference = single.indices(step);
      EXPECT_EQ(std::set<int64_t>(all.begin(), all.end()), std::set<int64_t>(reference.begin(), reference.end()));
      EXPECT_EQ(std::set<int64_t>(all.begin(), all.end()).size(), all.size()) << "shares overlap";
      epoch.insert(all.begin(), all.end());
    }
    // Complete: an epoch visits steps_per_epoch * global distinct samples (the tail is dropped).
    EXPECT_EQ(static_cast<int64_t>(epoch.size()), (n / global) * global);
  }
}

TEST(Sampler, DeterministicPerSeedAndEpoch) {
  DistributedSampler a(500, 10, 2, 1, 7), b(500, 10, 2, 1, 7), c(500, 10, 2, 1, 8);
  EXPECT_EQ(a.indices(3), b.indices(3));
  EXPECT_EQ(a.indices(60), b.indices(60));  // second epoch
  EXPECT_NE(a.permutation(0), a.permutation(1));
  EXPECT_NE(a.permutation(0), c.permutation(0));
  EXPECT_THROW(DistributedSampler(500, 10, 3, 0, 7), std::invalid_argument);
  EXPECT_THROW(DistributedSampler(5, 10, 1, 0, 7), std::invalid_argument);
}

}  // namespace
}  // namespace vlm
