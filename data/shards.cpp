#include "data/shards.h"

#include <algorithm>

#include "data/files.h"

namespace vlm {

std::pair<std::string, std::string> split_key(const std::string& member_name) {
  const size_t slash = member_name.rfind('/');
  const size_t dot = member_name.find('.', slash == std::string::npos ? 0 : slash + 1);
  if (dot == std::string::npos) return {member_name, ""};
  return {member_name.substr(0, dot), member_name.substr(dot + 1)};
}

namespace {

// Damage::samples of the archive-level damage `first_of_shard[s]` (an index
// into set.damage, or -1), from the samples found in each shard.
void estimate_lost_samples(ShardSet& set, const std::vector<int64_t>& found, const std::vector<int64_t>& first_of_shard) {
  std::vector<int64_t> intact;
  for (size_t s = 0; s < found.size(); ++s) {
    if (first_of_shard[s] < 0) intact.push_back(found[s]);
  }
  int64_t typical = 0;
  if (!intact.empty()) {
    std::nth_element(intact.begin(), intact.begin() + static_cast<std::ptrdiff_t>(intact.size() / 2), intact.end());
    typical = intact[intact.size() / 2];
  } else if (!found.empty()) {
    typical = *std::max_element(found.begin(), found.end());
  }
  for (size_t s = 0; s < found.size(); ++s) {
    if (first_of_shard[s] >= 0) {
      set.damage[static_cast<size_t>(first_of_shard[s])].samples = std::max<int64_t>(1, typical - found[s]);
    }
  }
}

}  // namespace

ShardSet index_shards(const std::vector<std::string>& paths) {
  ShardSet set;
  set.paths = paths;
  std::vector<int64_t> found(paths.size(), 0), first_damage(paths.size(), -1);
  for (int32_t shard = 0; shard < static_cast<int32_t>(paths.size()); ++shard) {
    const std::string& path = paths[shard];
    const size_t samples_before = set.samples.size();
    TarIndex index;
    try {
      index = index_tar(path);
    } catch (const TarError& e) {
      first_damage[shard] = static_cast<int64_t>(set.damage.size());
      set.damage.push_back({path, "", std::string("unreadable shard: ") + e.what()});
      continue;
    }
    set.bytes += index.file_size;
    if (!index.damage.empty()) first_damage[shard] = static_cast<int64_t>(set.damage.size());
    for (const auto& d : index.damage) set.damage.push_back({path, "", d.what + " (at byte " + std::to_string(d.offset) + ")"});

    // Members of one key are consecutive; a key ends where the next begins.
    ShardSample current;
    bool open = false;
    auto close = [&]() {
      if (!open) return;
      if (current.image.name.empty()) {
        set.damage.push_back({path, current.key, "no image (.jpg, .jpeg or .png)"});
      } else if (current.caption.name.empty()) {
        set.damage.push_back({path, current.key, "no caption (.txt)"});
      } else {
        set.samples.push_back(current);
      }
      open = false;
    };
    for (const auto& member : index.members) {
      auto [key, ext] = split_key(member.name);
      if (!open || key != current.key) {
        close();
        current = ShardSample{shard, key, {}, {}, {}};
        open = true;
      }
      if (is_image_extension(ext)) {
        current.image = member;
      } else if (ext == "txt") {
        current.caption = member;
      } else if (ext == "json") {
        current.json = member;
      }  // other members (.cls, .npy, ...) belong to other uses of the corpus
    }
    close();
    found[shard] = static_cast<int64_t>(set.samples.size() - samples_before);
  }
  estimate_lost_samples(set, found, first_damage);
  return set;
}

std::string ShardReader::read(int32_t shard, const TarMember& member) {
  TarFile* file;
  {
    std::lock_guard<std::mutex> hold(mutex_);
    auto& slot = files_.at(static_cast<size_t>(shard));
    if (!slot) slot = std::make_unique<TarFile>(set_.paths[shard]);
    file = slot.get();
  }
  return file->read(member);
}

}  // namespace vlm
