#include "data/shard_sink.h"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <filesystem>
#include <stdexcept>

namespace vlm {
namespace {

std::string shard_number(int64_t n) {
  char text[24];
  std::snprintf(text, sizeof text, "%05lld", static_cast<long long>(n));
  return text;
}

}  // namespace

ShardSink::ShardSink(std::string out_dir, std::string prefix, int64_t samples_per_shard, int64_t expected_samples)
    : out_dir_(std::move(out_dir)), prefix_(std::move(prefix)), samples_per_shard_(samples_per_shard),
      expected_(expected_samples) {
  if (samples_per_shard_ < 1) throw std::invalid_argument("--shard-samples must be at least 1");
  // Shards of an earlier set under the same names would be overwritten in part
  // and the rest left in place: one brace pattern would then read two sets.
  std::error_code missing;
  for (const auto& entry : std::filesystem::directory_iterator(out_dir_, missing)) {
    const std::string name = entry.path().filename().string();
    const std::string head = prefix_ + "-";
    const bool ours = name.size() == head.size() + 9 && name.compare(0, head.size(), head) == 0 &&
                      name.compare(head.size() + 5, 4, ".tar") == 0 &&
                      std::all_of(name.begin() + head.size(), name.begin() + head.size() + 5, ::isdigit);
    if (ours) {
      throw std::invalid_argument("--out " + out_dir_ + " already holds shards named " + prefix_ + "-NNNNN.tar (" + name +
                                  "): a new set would overwrite some of them and leave the others. HINT: choose an "
                                  "empty folder or another --prefix, or remove the old shards");
    }
  }
  std::filesystem::create_directories(out_dir_);
}

void ShardSink::add(const std::string& key, const std::string& image, const std::string& image_ext,
                    const std::string& caption, const std::string& json) {
  if (key.empty() || key.find('.') != std::string::npos) {
    throw std::invalid_argument("sample key '" + key + "' must be non-empty and contain no '.' (WebDataset splits "
                                "member names at the first '.')");
  }
  if (!shard_) {
    shard_ = std::make_unique<TarWriter>(out_dir_ + "/" + prefix_ + "-" + shard_number(shards_) + ".tar");
  }
  shard_->add(key + "." + image_ext, image);
  shard_->add(key + ".txt", caption);
  if (!json.empty()) shard_->add(key + ".json", json);
  ++samples_;
  if (++in_shard_ == samples_per_shard_) close_shard();
}

void ShardSink::close_shard() {
  if (!shard_) return;
  shard_->finish();
  bytes_ += static_cast<int64_t>(shard_->bytes_written());
  shard_.reset();
  ++shards_;
  in_shard_ = 0;
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  std::fprintf(stderr, "vlm-data: wrote %s-%s.tar: %lld%s samples, %.1f MB, %.0f samples/s\n", prefix_.c_str(),
               shard_number(shards_ - 1).c_str(), static_cast<long long>(samples_),
               expected_ > 0 ? (" of " + std::to_string(expected_)).c_str() : "", bytes_ / 1e6,
               samples_ / std::max(seconds, 1e-9));
}

std::string ShardSink::finish() {
  close_shard();
  if (shards_ == 0) throw std::invalid_argument("no samples to write: the input holds no usable image-caption pair");
  const std::string last = shard_number(shards_ - 1);
  return out_dir_ + "/" + prefix_ + "-" + (shards_ == 1 ? last : "{00000.." + last + "}") + ".tar";
}

}  // namespace vlm
