#pragma once
// A word-level tokenizer over a fixed vocabulary, with special tokens.

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

namespace vlm {

class WordTokenizer {
 public:
  static constexpr int64_t kPad = 0;
  static constexpr int64_t kBos = 1;
  static constexpr int64_t kEos = 2;
  static constexpr int64_t kUnk = 3;

  // Ids 4.. go to `words` in sorted order, so the mapping depends only on the set.
  explicit WordTokenizer(std::vector<std::string> words);

  int64_t vocab_size() const { return static_cast<int64_t>(words_.size()); }

  // <bos> w1 .. wn <eos>; words split on spaces; unknown words map to <unk>.
  std::vector<int64_t> encode(const std::string& text) const;

  // Words between <bos> and the first <eos>/<pad>, joined by spaces.
  std::string decode(const int64_t* ids, int64_t count) const;

 private:
  std::vector<std::string> words_;
  std::unordered_map<std::string, int64_t> ids_;
};

}  // namespace vlm
