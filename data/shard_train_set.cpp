#include "data/shard_train_set.h"

#include <glog/logging.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>

#include <google/protobuf/util/json_util.h>

#include "data/idx.h"
#include "data/sample_metadata.pb.h"

namespace vlm {

ShardTrainSet::ShardTrainSet(const std::vector<std::string>& paths, const Tokenizer& tokenizer,
                             ShardTrainOptions options)
    : tokenizer_(tokenizer), options_(std::move(options)), set_(index_shards(paths)) {
  reader_ = std::make_unique<ShardReader>(set_);
  int64_t lost = 0;
  for (const Damage& d : set_.damage) lost += d.samples;
  total_ = static_cast<int64_t>(set_.samples.size()) + lost;
  damage_budget_ = static_cast<int64_t>(std::floor(options_.max_damaged_fraction * static_cast<double>(total_)));
  LOG(INFO) << options_.field << ": " << set_.samples.size() << " samples in " << set_.paths.size() << " shards ("
            << set_.bytes / 1e6 << " MB), " << set_.damage.size() << " damaged (about " << lost << " samples lost)";
  for (const Damage& d : set_.damage) record_damage(d);
  if (set_.samples.empty()) {
    throw DataError(options_.field + ": no usable sample in " + std::to_string(paths.size()) + " shards (first: " +
                    (paths.empty() ? std::string("none") : paths.front()) + "); run `vlm-data inspect` on them");
  }
}

void ShardTrainSet::record_damage(const Damage& d) const {
  LOG(WARNING) << "data: damaged sample skipped: shard " << d.shard << (d.key.empty() ? "" : " key " + d.key) << ": "
               << d.what;
  std::lock_guard<std::mutex> hold(damage_mutex_);
  damage_by_shard_[d.shard] += d.samples;
  if ((damaged_ += d.samples) <= damage_budget_) return;
  std::string shards;
  for (const auto& [shard, count] : damage_by_shard_) shards += "\n  " + shard + ": " + std::to_string(count);
  throw DataError(options_.field + ": " + std::to_string(damaged_.load()) + " damaged samples, more than " +
                  "data.max_damaged_fraction (" + std::to_string(options_.max_damaged_fraction) + ") of " +
                  std::to_string(total_) + " allows (a damaged archive counts the samples it is estimated to have " +
                  "lost: the intact shards' median less what it holds). Damaged samples per shard:" +
                  shards + "\nRun `vlm-data inspect` on these shards, replace them, or raise data.max_damaged_fraction");
}

void ShardTrainSet::record_damage(int64_t index, const std::string& what) const {
  {
    std::lock_guard<std::mutex> hold(damage_mutex_);
    if (!damaged_samples_.insert(index).second) return;  // seen in an earlier epoch
  }
  const ShardSample& s = set_.samples[static_cast<size_t>(index)];
  record_damage(Damage{set_.paths[s.shard], s.key, what + "; replaced by the next sample"});
}

std::string ShardTrainSet::load(int64_t index, int64_t epoch, float* image) const {
  const int64_t n = size();
  const ImageFormat& f = options_.format;
  // Decode at least large enough for the crop that may follow.
  const double margin = options_.augment.enabled ? 1.0 / std::sqrt(options_.augment.min_scale) : 1.0;
  const DecodeOptions decode{f.channels, static_cast<int>(std::ceil(f.height * margin)),
                             static_cast<int>(std::ceil(f.width * margin))};
  // Captions alone (the loss normaliser every rank computes) never depend on
  // what this rank happened to find damaged, so that all ranks agree.
  const int64_t first = image != nullptr ? usable(index) : index;
  for (int64_t k = 0; k < n; ++k) {
    const int64_t i = (first + k) % n;
    const ShardSample& s = set_.samples[static_cast<size_t>(i)];
    try {
      std::string caption = reader_->read(s.shard, s.caption);
      while (!caption.empty() && std::isspace(static_cast<unsigned char>(caption.back()))) caption.pop_back();
      if (image != nullptr) {
        const Image decoded = decode_image(reader_->read(s.shard, s.image), decode);
        const uint64_t seed = mix_seed(options_.seed ^ (0x2545f4914f6cdd1dULL * static_cast<uint64_t>(epoch + 1)),
                                       static_cast<uint64_t>(i));
        const bool may_flip = options_.augment.enabled && flip_keeps_caption(caption);
        preprocess(decoded, f, options_.augment, seed, may_flip, image);
      }
      return caption;
    } catch (const ImageError& e) {
      record_damage(i, "image " + s.image.name + ": " + e.what());
    } catch (const TarError& e) {
      record_damage(i, e.what());
    }
  }
  throw DataError(options_.field + ": every sample is damaged");
}

Batch ShardTrainSet::batch(const std::vector<int64_t>& indices, int64_t epoch, int64_t max_tokens, bool pinned) const {
  const int64_t b = static_cast<int64_t>(indices.size());
  const ImageFormat& f = options_.format;
  const auto host = torch::TensorOptions().pinned_memory(pinned);
  Batch batch{torch::empty({b, f.channels, f.height, f.width}, host.dtype(torch::kFloat)),
              torch::full({b, max_tokens}, WordTokenizer::kPad, host.dtype(torch::kLong)),
              torch::empty({b}, host.dtype(torch::kLong))};
  float* images = batch.images.data_ptr<float>();
  int64_t* tokens = batch.tokens.data_ptr<int64_t>();
  int64_t* lengths = batch.lengths.data_ptr<int64_t>();
  const int64_t image_size = static_cast<int64_t>(f.channels) * f.height * f.width;
  for (int64_t i = 0; i < b; ++i) {
    const std::vector<int64_t> ids =
        encode_truncated(tokenizer_, load(indices[static_cast<size_t>(i)], epoch, images + i * image_size), max_tokens);
    std::memcpy(tokens + i * max_tokens, ids.data(), ids.size() * sizeof(int64_t));
    lengths[i] = static_cast<int64_t>(ids.size());
  }
  return batch;
}

int64_t ShardTrainSet::usable(int64_t index) const {
  std::lock_guard<std::mutex> hold(damage_mutex_);
  const int64_t n = size();
  for (int64_t k = 0; k < n; ++k) {
    if (damaged_samples_.count((index + k) % n) == 0) return (index + k) % n;
  }
  return index;
}

std::vector<std::string> ShardTrainSet::class_names(const std::vector<int64_t>& indices) const {
  std::vector<std::string> names;
  for (int64_t index : indices) {
    const ShardSample& s = set_.samples[static_cast<size_t>(usable(index))];
    SampleMetadata metadata;
    if (s.json.size > 0) {
      google::protobuf::util::JsonParseOptions lenient;
      lenient.ignore_unknown_fields = true;
      std::string bytes;
      try {
        bytes = reader_->read(s.shard, s.json);
      } catch (const TarError& e) {
        LOG(WARNING) << "data: " << set_.paths[s.shard] << " key " << s.key << ": " << e.what();
      }
      if (!google::protobuf::util::JsonStringToMessage(bytes, &metadata, lenient).ok()) {
        LOG(WARNING) << "data: " << set_.paths[s.shard] << " key " << s.key << ": " << s.json.name
                     << " is not a JSON object with a string \"class\"; the sample names no class";
        metadata.Clear();
      }
    }
    names.push_back(metadata.class_());
  }
  return names;
}

CaptionCounts ShardTrainSet::caption_counts(const std::vector<int64_t>& indices, int64_t max_tokens) const {
  CaptionCounts counts;
  for (int64_t index : indices) {
    counts.add(static_cast<int64_t>(encode_truncated(tokenizer_, load(index, 0, nullptr), max_tokens).size()));
  }
  return counts;
}

}  // namespace vlm
