// A C interface to libsentencepiece, built as its own shared object and
// loaded with dlopen(RTLD_LOCAL | RTLD_DEEPBIND) by
// data/sentencepiece_tokenizer.cpp.
//
// Note [SentencePiece in its own namespace]: Debian's libsentencepiece embeds
// protobuf-lite and exports its symbols. Linked into a program that also uses
// libprotobuf (every vlmtrain program), one set interposes the other and
// protobuf's static initialisers crash before main. Loaded locally with deep
// binding, the library keeps its protobuf to itself and ours stays ours.

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <unordered_map>
#include <vector>

namespace {

void copy_error(const std::string& message, char* error, size_t size) {
  if (size == 0) return;
  std::strncpy(error, message.c_str(), size - 1);
  error[size - 1] = '\0';
}

class Sentences : public sentencepiece::SentenceIterator {
 public:
  Sentences(const char* const* sentences, size_t count) : sentences_(sentences), count_(count) { load(); }
  bool done() const override { return next_ >= count_; }
  void Next() override {
    ++next_;
    load();
  }
  const std::string& value() const override { return value_; }
  sentencepiece::util::Status status() const override { return {}; }

 private:
  void load() {
    if (next_ < count_) value_ = sentences_[next_];
  }
  const char* const* sentences_;
  size_t count_, next_ = 0;
  std::string value_;
};

}  // namespace

extern "C" {

void* vlm_sp_load(const char* path, char* error, size_t error_size) {
  auto* processor = new sentencepiece::SentencePieceProcessor();
  const auto status = processor->Load(path);
  if (!status.ok()) {
    copy_error(status.ToString(), error, error_size);
    delete processor;
    return nullptr;
  }
  return processor;
}

void vlm_sp_free(void* processor) { delete static_cast<sentencepiece::SentencePieceProcessor*>(processor); }

// pad, bos, eos, unk ids and the number of pieces.
void vlm_sp_ids(void* processor, int out[5]) {
  const auto* p = static_cast<sentencepiece::SentencePieceProcessor*>(processor);
  out[0] = p->pad_id(), out[1] = p->bos_id(), out[2] = p->eos_id(), out[3] = p->unk_id(), out[4] = p->GetPieceSize();
}

// Piece ids of `text` into a malloc'd array (free with vlm_sp_release).
size_t vlm_sp_encode(void* processor, const char* text, size_t length, int** ids) {
  std::vector<int> pieces;
  static_cast<sentencepiece::SentencePieceProcessor*>(processor)->Encode(std::string(text, length), &pieces).IgnoreError();
  *ids = static_cast<int*>(std::malloc(sizeof(int) * (pieces.size() + 1)));
  std::memcpy(*ids, pieces.data(), sizeof(int) * pieces.size());
  return pieces.size();
}

// The text of `ids` into a malloc'd string (free with vlm_sp_release).
size_t vlm_sp_decode(void* processor, const int* ids, size_t count, char** text) {
  std::string out;
  static_cast<sentencepiece::SentencePieceProcessor*>(processor)
      ->Decode(std::vector<int>(ids, ids + count), &out)
      .IgnoreError();
  *text = static_cast<char*>(std::malloc(out.size() + 1));
  std::memcpy(*text, out.c_str(), out.size() + 1);
  return out.size();
}

void vlm_sp_release(void* buffer) { std::free(buffer); }

// Trains on `sentences` with "key", "value" option pairs; the serialised model
// goes to a malloc'd buffer. Returns 0 on success.
int vlm_sp_train(const char* const* sentences, size_t count, const char* const* options, size_t option_count,
                 char** model, size_t* model_size, char* error, size_t error_size) {
  std::unordered_map<std::string, std::string> args;
  for (size_t i = 0; i + 1 < 2 * option_count; i += 2) args[options[i]] = options[i + 1];
  Sentences iterator(sentences, count);
  std::string serialized;
  const auto status = sentencepiece::SentencePieceTrainer::Train(args, &iterator, &serialized);
  if (!status.ok()) {
    copy_error(status.ToString(), error, error_size);
    return 1;
  }
  *model = static_cast<char*>(std::malloc(serialized.size()));
  std::memcpy(*model, serialized.data(), serialized.size());
  *model_size = serialized.size();
  return 0;
}

}  // extern "C"
