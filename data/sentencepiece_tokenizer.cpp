#include "data/sentencepiece_tokenizer.h"

#include <dlfcn.h>

#include <cstdio>
#include <fstream>
#include <regex>

#include "data/idx.h"

namespace vlm {
namespace {

// The C interface of data/sentencepiece_shim.cpp.
struct Shim {
  void* (*load)(const char*, char*, size_t);
  void (*free)(void*);
  void (*ids)(void*, int[5]);
  size_t (*encode)(void*, const char*, size_t, int**);
  size_t (*decode)(void*, const int*, size_t, char**);
  void (*release)(void*);
  int (*train)(const char* const*, size_t, const char* const*, size_t, char**, size_t*, char*, size_t);
};

template <typename F>
void bind(void* handle, const char* name, F* function) {
  *function = reinterpret_cast<F>(dlsym(handle, name));
  if (*function == nullptr) throw DataError(std::string("SentencePiece shim: no symbol ") + name);
}

// Note [SentencePiece in its own namespace]: RTLD_LOCAL keeps the library's
// embedded protobuf out of the global scope; RTLD_DEEPBIND makes it use its
// own rather than ours.
const Shim& shim() {
  static const Shim loaded = [] {
    const std::string path = VLM_SENTENCEPIECE_SHIM;
    if (path.empty()) {
      throw DataError("data.tokenizer_model: this vlmtrain was built without SentencePiece. HINT: install "
                      "libsentencepiece-dev (scripts/install-deps.sh) and rebuild");
    }
    void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
    if (handle == nullptr) throw DataError(std::string("cannot load SentencePiece (") + dlerror() + ")");
    Shim s{};
    bind(handle, "vlm_sp_load", &s.load);
    bind(handle, "vlm_sp_free", &s.free);
    bind(handle, "vlm_sp_ids", &s.ids);
    bind(handle, "vlm_sp_encode", &s.encode);
    bind(handle, "vlm_sp_decode", &s.decode);
    bind(handle, "vlm_sp_release", &s.release);
    bind(handle, "vlm_sp_train", &s.train);
    return s;
  }();
  return loaded;
}

}  // namespace

SentencePieceTokenizer::SentencePieceTokenizer(const std::string& model_path) {
  char error[512] = "";
  processor_ = shim().load(model_path.c_str(), error, sizeof error);
  if (processor_ == nullptr) {
    // SentencePiece says where in its sources it failed ("Internal: ./src/x.cc(1101) [expression] ..."): drop that.
    std::string why = std::regex_replace(error, std::regex(R"(^\w+: \S+\(\d+\) \[.*\] ?)"), "");
    while (!why.empty() && why.back() == '.') why.pop_back();
    if (why.empty()) why = "the file is not one (it does not parse)";
    throw DataError("data.tokenizer_model " + model_path + ": cannot load a SentencePiece model: " + why +
                    ". HINT: make one with `vlm-data train-tokenizer`");
  }
  int ids[5];
  shim().ids(processor_, ids);
  vocab_size_ = ids[4];
  if (ids[0] != kPad || ids[1] != kBos || ids[2] != kEos || ids[3] != kUnk) {
    shim().free(processor_);
    throw DataError("data.tokenizer_model " + model_path + ": special ids pad " + std::to_string(ids[0]) + ", bos " +
                    std::to_string(ids[1]) + ", eos " + std::to_string(ids[2]) + ", unk " + std::to_string(ids[3]) +
                    "; vlmtrain needs 0, 1, 2, 3. HINT: train it with `vlm-data train-tokenizer`");
  }
}

SentencePieceTokenizer::~SentencePieceTokenizer() { shim().free(processor_); }

int64_t SentencePieceTokenizer::vocab_size() const { return vocab_size_; }

std::vector<int64_t> SentencePieceTokenizer::encode(const std::string& text) const {
  int* pieces = nullptr;
  const size_t count = shim().encode(processor_, text.data(), text.size(), &pieces);
  std::vector<int64_t> ids;
  ids.reserve(count + 2);
  ids.push_back(kBos);
  ids.insert(ids.end(), pieces, pieces + count);
  ids.push_back(kEos);
  shim().release(pieces);
  return ids;
}

std::string SentencePieceTokenizer::decode(const int64_t* ids, int64_t count) const {
  std::vector<int> pieces;
  for (int64_t i = 0; i < count; ++i) {
    if (ids[i] == kBos && i == 0) continue;
    if (ids[i] == kEos || ids[i] == kPad) break;
    pieces.push_back(ids[i] >= 0 && ids[i] < vocab_size_ ? static_cast<int>(ids[i]) : static_cast<int>(kUnk));
  }
  char* text = nullptr;
  const size_t length = shim().decode(processor_, pieces.data(), pieces.size(), &text);
  std::string out(text, length);
  shim().release(text);
  return out;
}

int train_tokenizer(const std::vector<std::string>& captions, const TokenizerTraining& options,
                    const std::string& out_path) {
  if (captions.empty()) throw DataError("train-tokenizer: no captions to learn from");
  const std::vector<std::string> args{
      "model_type", options.model_type,
      "vocab_size", std::to_string(options.vocab_size),
      "hard_vocab_limit", "false",  // a small corpus gets the pieces it has
      "character_coverage", "1.0",
      "pad_id", "0", "bos_id", "1", "eos_id", "2", "unk_id", "3",
      "input_sentence_size", "2000000", "shuffle_input_sentence", "true",
      "minloglevel", "1",
  };
  std::vector<const char*> arg_pointers, sentences;
  for (const auto& a : args) arg_pointers.push_back(a.c_str());
  for (const auto& c : captions) sentences.push_back(c.c_str());
  char* model = nullptr;
  size_t model_size = 0;
  char error[512] = "";
  if (shim().train(sentences.data(), sentences.size(), arg_pointers.data(), args.size() / 2, &model, &model_size, error,
                   sizeof error) != 0) {
    throw DataError(std::string("train-tokenizer: SentencePiece training failed: ") + error);
  }
  const std::string bytes(model, model_size);
  shim().release(model);
  const std::string partial = out_path + ".partial";
  {
    std::ofstream out(partial, std::ios::binary);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    if (!out.flush()) throw DataError(partial + ": cannot write the tokenizer model");
  }
  if (std::rename(partial.c_str(), out_path.c_str()) != 0) throw DataError(out_path + ": cannot rename into place");
  return static_cast<int>(SentencePieceTokenizer(out_path).vocab_size());
}

}  // namespace vlm
