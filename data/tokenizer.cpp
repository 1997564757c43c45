#include "data/tokenizer.h"

#include <algorithm>
#include <sstream>

namespace vlm {

WordTokenizer::WordTokenizer(std::vector<std::string> words) : words_{"<pad>", "<bos>", "<eos>", "<unk>"} {
  std::sort(words.begin(), words.end());
  words.erase(std::unique(words.begin(), words.end()), words.end());
  for (auto& w : words) words_.push_back(std::move(w));
  for (size_t i = 0; i < words_.size(); ++i) ids_.emplace(words_[i], static_cast<int64_t>(i));
}

std::vector<int64_t> WordTokenizer::encode(const std::string& text) const {
  std::vector<int64_t> ids{kBos};
  std::istringstream in(text);
  std::string word;
  while (in >> word) {
    auto it = ids_.find(word);
    ids.push_back(it == ids_.end() ? kUnk : it->second);
  }
  ids.push_back(kEos);
  return ids;
}

std::string WordTokenizer::decode(const int64_t* ids, int64_t count) const {
  std::string text;
  for (int64_t i = 0; i < count; ++i) {
    if (ids[i] == kBos && i == 0) continue;
    if (ids[i] == kEos || ids[i] == kPad) break;
    const bool known = ids[i] >= 0 && ids[i] < vocab_size();
    text += (text.empty() ? "" : " ") + (known ? words_[ids[i]] : std::string("<unk>"));
  }
  return text;
}

}  // namespace vlm
