#pragma once
// A SentencePiece subword tokenizer (Debian's libsentencepiece), trained from
// a corpus's captions by `vlm-data train-tokenizer`, with the special ids
// every vlmtrain tokenizer uses. The library is loaded on first use, in its
// own symbol namespace (Note [SentencePiece in its own namespace]).

#include <string>
#include <vector>

#include "data/tokenizer.h"

namespace vlm {

class SentencePieceTokenizer : public Tokenizer {
 public:
  // Loads a .model file; a DataError names the file when it cannot be read or
  // was trained with other special ids.
  explicit SentencePieceTokenizer(const std::string& model_path);
  ~SentencePieceTokenizer() override;
  SentencePieceTokenizer(const SentencePieceTokenizer&) = delete;
  SentencePieceTokenizer& operator=(const SentencePieceTokenizer&) = delete;

  int64_t vocab_size() const override;
  std::vector<int64_t> encode(const std::string& text) const override;
  std::string decode(const int64_t* ids, int64_t count) const override;

 private:
  void* processor_;  // a sentencepiece::SentencePieceProcessor inside the shim
  int64_t vocab_size_ = 0;
};

struct TokenizerTraining {
  int vocab_size = 8000;
  std::string model_type = "unigram";  // or "bpe"
};

// Trains a model on `captions` and writes it to `out_path` (atomically);
// returns the vocabulary size reached (at most the one asked for: a small
// corpus may not have that many pieces).
int train_tokenizer(const std::vector<std::string>& captions, const TokenizerTraining& options,
                    const std::string& out_path);

}  // namespace vlm
