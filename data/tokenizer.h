#pragma once
// Captions to token ids and back. Every tokenizer reserves the same special
// ids (pad 0, bos 1, eos 2, unk 3), so batches, losses and decoding do not
// depend on which one a run uses: the word tokenizer of the Fashion-MNIST
// task's fixed vocabulary, or a SentencePiece model trained from the
// captions (data/sentencepiece_tokenizer.h).

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

namespace vlm {

class Tokenizer {
 public:
  static constexpr int64_t kPad = 0;
  static constexpr int64_t kBos = 1;
  static constexpr int64_t kEos = 2;
  static constexpr int64_t kUnk = 3;

  virtual ~Tokenizer() = default;
  virtual int64_t vocab_size() const = 0;
  // <bos> t1 .. tn <eos>.
  virtual std::vector<int64_t> encode(const std::string& text) const = 0;
  // The text of the ids between <bos> and the first <eos>/<pad>.
  virtual std::string decode(const int64_t* ids, int64_t count) const = 0;
};

// A word-level tokenizer over a fixed vocabulary.
class WordTokenizer : public Tokenizer {
 public:
  // Ids 4.. go to `words` in sorted order, so the mapping depends only on the set.
  explicit WordTokenizer(std::vector<std::string> words);

  int64_t vocab_size() const override { return static_cast<int64_t>(words_.size()); }
  // Words split on spaces; unknown words map to <unk>.
  std::vector<int64_t> encode(const std::string& text) const override;
  // Words joined by spaces.
  std::string decode(const int64_t* ids, int64_t count) const override;

 private:
  std::vector<std::string> words_;
  std::unordered_map<std::string, int64_t> ids_;
};

}  // namespace vlm
