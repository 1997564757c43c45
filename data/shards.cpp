#include "data/shards.h"

#include "data/files.h"

namespace vlm {

std::pair<std::string, std::string> split_key(const std::string& member_name) {
  const size_t slash = member_name.rfind('/');
  const size_t dot = member_name.find('.', slash == std::string::npos ? 0 : slash + 1);
  if (dot == std::string::npos) return {member_name, ""};
  return {member_name.substr(0, dot), member_name.substr(dot + 1)};
}

ShardSet index_shards(const std::vector<std::string>& paths) {
  ShardSet set;
  set.paths = paths;
  for (int32_t shard = 0; shard < static_cast<int32_t>(paths.size()); ++shard) {
    const std::string& path = paths[shard];
    TarIndex index;
    try {
      index = index_tar(path);
    } catch (const TarError& e) {
      set.damage.push_back({path, "", std::string("unreadable shard: ") + e.what()});
      continue;
    }
    set.bytes += index.file_size;
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
  }
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
