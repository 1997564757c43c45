#include "data/inspect.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <sstream>

#include "data/image.h"
#include "data/shards.h"

namespace vlm {
namespace {

int64_t words(const std::string& text) {
  std::istringstream in(text);
  int64_t n = 0;
  for (std::string w; in >> w;) ++n;
  return n;
}

std::string one_line(std::string text, size_t limit = 70) {
  std::replace(text.begin(), text.end(), '\n', ' ');
  return text.size() > limit ? text.substr(0, limit) + "..." : text;
}

}  // namespace

int64_t inspect_shards(const std::vector<std::string>& paths, const InspectOptions& options) {
  const ShardSet set = index_shards(paths);
  ShardReader reader(set);
  std::vector<Damage> damage = set.damage;
  std::map<std::string, int64_t> sizes, formats;
  int64_t min_words = INT64_MAX, max_words = 0, total_words = 0, image_bytes = 0;
  const auto start = std::chrono::steady_clock::now();
  auto last_report = start;
  for (size_t i = 0; i < set.samples.size(); ++i) {
    const ShardSample& s = set.samples[i];
    const std::string& shard = set.paths[s.shard];
    std::string caption;
    try {
      caption = reader.read(s.shard, s.caption);
    } catch (const std::exception& e) {
      damage.push_back({shard, s.key, std::string("unreadable caption: ") + e.what()});
      continue;
    }
    const int64_t n = words(caption);
    if (n == 0) damage.push_back({shard, s.key, "empty caption"});
    min_words = std::min(min_words, n), max_words = std::max(max_words, n), total_words += n;
    image_bytes += static_cast<int64_t>(s.image.size);
    const std::string ext = s.image.name.substr(s.image.name.rfind('.') + 1);
    ++formats[ext];
    std::string size = "not decoded";
    if (options.decode) {
      try {
        const Image image = decode_image(reader.read(s.shard, s.image), {1});
        size = std::to_string(image.width) + "x" + std::to_string(image.height);
        ++sizes[size];
      } catch (const std::exception& e) {
        damage.push_back({shard, s.key, "image " + s.image.name + ": " + e.what()});
        size = "damaged";
      }
    }
    if (static_cast<int64_t>(i) < options.show) {
      std::printf("  sample %s (%s): %s %s, \"%s\"\n", s.key.c_str(), shard.c_str(), ext.c_str(), size.c_str(),
                  one_line(caption).c_str());
    }
    const auto now = std::chrono::steady_clock::now();
    if (now - last_report > std::chrono::seconds(10)) {
      std::fprintf(stderr, "vlm-data: inspected %zu of %zu samples\n", i + 1, set.samples.size());
      last_report = now;
    }
  }
  const int64_t samples = static_cast<int64_t>(set.samples.size());
  std::printf("shards: %zu, %.1f MB\n", set.paths.size(), set.bytes / 1e6);
  std::printf("samples: %lld, image bytes %.1f MB\n", static_cast<long long>(samples), image_bytes / 1e6);
  std::string format_list;
  for (const auto& [f, n] : formats) format_list += " " + f + " " + std::to_string(n);
  std::printf("image formats:%s\n", format_list.empty() ? " none" : format_list.c_str());
  if (options.decode) {
    std::vector<std::pair<int64_t, std::string>> common;
    for (const auto& [size, n] : sizes) common.push_back({n, size});
    std::sort(common.rbegin(), common.rend());
    std::printf("image sizes (width x height): %zu distinct;", common.size());
    for (size_t i = 0; i < std::min<size_t>(common.size(), 5); ++i) {
      std::printf(" %s %lld", common[i].second.c_str(), static_cast<long long>(common[i].first));
    }
    std::printf("\n");
  }
  if (samples > 0) {
    std::printf("caption words: min %lld, mean %.1f, max %lld\n", static_cast<long long>(min_words),
                static_cast<double>(total_words) / samples, static_cast<long long>(max_words));
  }
  std::printf("damaged: %zu\n", damage.size());
  for (size_t i = 0; i < damage.size(); ++i) {
    if (i == 50) {
      std::printf("  ... and %zu more\n", damage.size() - 50);
      break;
    }
    const Damage& d = damage[i];
    std::printf("  %s%s%s: %s", d.shard.c_str(), d.key.empty() ? "" : " key ", d.key.c_str(), d.what.c_str());
    if (d.key.empty()) std::printf(" (about %lld samples lost)", static_cast<long long>(d.samples));
    std::printf("\n");
  }
  return static_cast<int64_t>(damage.size());
}

}  // namespace vlm
