#pragma once
// `vlm-data convert`: datasets into WebDataset shards (data/shard_sink.h).

#include <cstdint>
#include <string>

namespace vlm {

struct ConvertOptions {
  std::string out_dir;
  std::string prefix = "data";       // shards are <out_dir>/<prefix>-NNNNN.tar
  int64_t samples_per_shard = 10000;
};

// Fashion-MNIST from its IDX files, captioned as the built-in tasks caption it
// (data/task.h): `task` single|pair|mixed, `samples` of them from `split`
// train|test (0: the split's size), synthesised with `seed`. Sample i of the
// task is the i-th sample of the shards, so that training from the shards
// sees exactly the images and captions the IDX run sees.
struct FashionSource {
  std::string dir, split = "train", task = "mixed";
  int64_t samples = 0, seed = 1234;
};
std::string convert_fashion_mnist(const FashionSource& source, const ConvertOptions& options);

// A folder of `<name>.jpg|jpeg|png` with `<name>.txt` captions, in name
// order. Images without a caption are skipped and counted.
std::string convert_folder(const std::string& folder, const ConvertOptions& options);

// A COCO-style captions JSON and its image folder: one sample per caption.
// Captions whose image is missing are skipped and counted.
std::string convert_coco(const std::string& captions_json, const std::string& images_dir, const ConvertOptions& options);

}  // namespace vlm
