#include "data/convert.h"

#include <google/protobuf/util/json_util.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <stdexcept>

#include "data/coco.pb.h"
#include "data/fashion_mnist.h"
#include "data/files.h"
#include "data/image.h"
#include "data/shard_sink.h"
#include "data/task.h"

namespace vlm {
namespace {

namespace fs = std::filesystem;

bool is_image_file(const fs::path& p) {
  const std::string ext = p.extension().string();
  return !ext.empty() && is_image_extension(lower_case(ext.substr(1)));
}

// A name made a key: WebDataset splits member names at the first '.'.
std::string key_of(std::string name) {
  std::replace(name.begin(), name.end(), '.', '_');
  return name;
}

// PNG's or JPEG's signature: what the shard readers decode.
bool looks_like_image(const std::string& bytes) {
  return bytes.rfind("\x89PNG\r\n\x1a\n", 0) == 0 || bytes.rfind("\xff\xd8\xff", 0) == 0;
}

void report_skipped(int64_t skipped, const std::string& why) {
  if (skipped > 0) std::fprintf(stderr, "vlm-data: skipped %lld %s\n", static_cast<long long>(skipped), why.c_str());
}

}  // namespace

std::string convert_fashion_mnist(const FashionSource& source, const ConvertOptions& options) {
  if (source.split != "train" && source.split != "test") {
    throw std::invalid_argument("--split must be train or test, not '" + source.split + "'");
  }
  const std::map<std::string, TaskKind> kinds{{"single", TaskKind::kSingle}, {"pair", TaskKind::kPair},
                                              {"mixed", TaskKind::kMixed}};
  if (!kinds.count(source.task)) throw std::invalid_argument("--task must be single, pair or mixed, not '" + source.task + "'");
  const FashionMnist items = load_fashion_mnist(source.dir, source.split == "train" ? Split::kTrain : Split::kTest);
  const int64_t samples = source.samples > 0 ? source.samples : items.size();
  const Task task(kinds.at(source.task), items, samples, static_cast<uint64_t>(source.seed));
  ShardSink sink(options.out_dir, options.prefix, options.samples_per_shard, task.size());
  const int64_t side = kFashionSide, width = task.image_width();
  const uint8_t* pixels = items.images.data_ptr<uint8_t>();
  const auto* labels = items.labels.data_ptr<int64_t>();
  Image canvas{static_cast<int>(side), static_cast<int>(width), 1, {}};
  for (int64_t i = 0; i < task.size(); ++i) {
    const Sample s = task.sample(i);
    canvas.pixels.assign(static_cast<size_t>(side * width), 0);  // the items' own background
    for (int slot = 0; slot < 2; ++slot) {
      const int64_t item = slot == 0 ? s.left : s.right;
      if (item < 0) continue;
      for (int64_t y = 0; y < side; ++y) {
        std::copy_n(pixels + (item * side + y) * side, side, canvas.pixels.begin() + y * width + slot * side);
      }
    }
    char key[24];
    std::snprintf(key, sizeof key, "%09lld", static_cast<long long>(i));
    // A single item names its class, for zero-shot validation (data/sample_metadata.proto).
    const std::string json =
        s.right < 0 ? std::string("{\"class\": \"") + kFashionClassNames[labels[s.left]] + "\"}\n" : "";
    sink.add(key, encode_png(canvas), "png", s.caption, json);
  }
  return sink.finish();
}

std::string convert_folder(const std::string& folder, const ConvertOptions& options) {
  if (!fs::is_directory(folder)) throw std::invalid_argument(folder + ": not a folder of images and captions");
  const std::vector<std::string> images = files_in(folder, is_image_extension);
  ShardSink sink(options.out_dir, options.prefix, options.samples_per_shard, static_cast<int64_t>(images.size()));
  int64_t no_caption = 0, not_images = 0;
  for (const fs::path image : images) {
    fs::path caption = image;
    caption.replace_extension(".txt");
    if (!fs::exists(caption)) {
      ++no_caption;
      std::fprintf(stderr, "vlm-data: %s has no caption %s: skipped\n", image.c_str(), caption.filename().c_str());
      continue;
    }
    std::string ext = lower_case(image.extension().string().substr(1));
    std::string bytes = read_file(image);
    if (!looks_like_image(bytes)) {  // a text or empty file named .png would be packed and fail at training
      ++not_images;
      std::fprintf(stderr, "vlm-data: %s is not a PNG or JPEG image: skipped\n", image.c_str());
      continue;
    }
    sink.add(key_of(image.stem().string()), bytes, ext, trimmed(read_file(caption)));
  }
  report_skipped(no_caption, "images without a caption");
  report_skipped(not_images, "files that are not PNG or JPEG images");
  return sink.finish();
}

std::string convert_coco(const std::string& captions_json, const std::string& images_dir, const ConvertOptions& options) {
  coco::Captions coco;
  google::protobuf::util::JsonParseOptions parse;
  parse.ignore_unknown_fields = true;
  const auto status = google::protobuf::util::JsonStringToMessage(read_file(captions_json), &coco, parse);
  if (!status.ok()) {
    throw std::invalid_argument(captions_json + ": not a COCO-style captions file (expected {\"images\": [{\"id\", "
                                "\"file_name\"}], \"annotations\": [{\"image_id\", \"caption\"}]}): " +
                                status.ToString());
  }
  std::map<int64_t, std::string> file_of;
  for (const auto& image : coco.images()) file_of[image.id()] = image.file_name();
  ShardSink sink(options.out_dir, options.prefix, options.samples_per_shard, coco.annotations_size());
  int64_t missing = 0;
  std::map<int64_t, int> captions_of;  // numbers an image's captions for their keys
  for (const auto& a : coco.annotations()) {
    const auto it = file_of.find(a.image_id());
    const fs::path image = it == file_of.end() ? fs::path() : fs::path(images_dir) / it->second;
    if (it == file_of.end() || !fs::exists(image) || !is_image_file(image)) {
      ++missing;
      std::fprintf(stderr, "vlm-data: caption %lld: image %lld %s: skipped\n", static_cast<long long>(a.id()),
                   static_cast<long long>(a.image_id()),
                   it == file_of.end() ? "is not listed in \"images\"" : ("(" + image.string() + ") is missing or not a JPEG/PNG").c_str());
      continue;
    }
    const std::string bytes = read_file(image);
    if (!looks_like_image(bytes)) {
      ++missing;
      std::fprintf(stderr, "vlm-data: caption %lld: %s is not a PNG or JPEG image: skipped\n",
                   static_cast<long long>(a.id()), image.c_str());
      continue;
    }
    const std::string key = key_of(image.stem().string()) + "_" + std::to_string(captions_of[a.image_id()]++);
    sink.add(key, bytes, lower_case(image.extension().string().substr(1)), trimmed(a.caption()));
  }
  report_skipped(missing, "captions whose image is missing or not an image");
  return sink.finish();
}

}  // namespace vlm
