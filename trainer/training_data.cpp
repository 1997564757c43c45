#include "trainer/training_data.h"

#include <filesystem>

#include "checkpoint/crc32c.h"
#include "data/brace.h"
#include "data/files.h"
#include "data/sentencepiece_tokenizer.h"
#include "data/idx.h"
#include "data/shard_train_set.h"
#include "proto/config_loader.h"

namespace vlm {
namespace {

// The shards `patterns` name; a missing one is a config error (a wrong path or
// brace range), not damaged data to skip.
std::vector<std::string> existing_shards(const google::protobuf::RepeatedPtrField<std::string>& patterns,
                                         const std::string& field) {
  const std::vector<std::string> paths = expand_shard_patterns({patterns.begin(), patterns.end()});
  std::vector<std::string> missing;
  for (const std::string& path : paths) {
    if (!std::filesystem::exists(path)) missing.push_back(path);
  }
  if (!missing.empty()) {
    throw ConfigError(field + ": " + missing.front() + " does not exist (" + std::to_string(missing.size()) + " of " +
                      std::to_string(paths.size()) + " shards missing). HINT: check the path and the brace range");
  }
  return paths;
}

// data.pixel_mean/pixel_std over `defaults`: one value or one per channel.
std::vector<float> per_channel(const google::protobuf::RepeatedField<float>& given, std::vector<float> defaults,
                               int channels, const char* field) {
  if (given.empty()) return defaults;
  if (given.size() != 1 && given.size() != channels) {
    throw ConfigError(std::string("data.") + field + " has " + std::to_string(given.size()) + " values; give one, or " +
                    std::to_string(channels) + " (one per channel)");
  }
  for (float v : given) {
    if (std::string(field) == "pixel_std" && !(v > 0)) throw ConfigError("data.pixel_std values must be positive");
  }
  return {given.begin(), given.end()};
}

ImageFormat shard_format(const DataConfig& config) {
  if (config.image_height() == 0 || config.image_width() == 0) {
    throw ConfigError("data.image_height and data.image_width must be set when training on data.train_shards "
                    "(shard images are resized and cropped to them), e.g. 64 and 64");
  }
  const int channels = config.image_channels() == 0 ? 3 : config.image_channels();
  if (channels == 2) throw ConfigError("data.image_channels must be 1 (grey) or 3 (RGB), not 2");
  ImageFormat f = photo_format(config.image_height(), config.image_width(), channels);
  f.mean = per_channel(config.pixel_mean(), f.mean, channels, "pixel_mean");
  f.std = per_channel(config.pixel_std(), f.std, channels, "pixel_std");
  return f;
}

void check_task_image_settings(const DataConfig& config, const ImageFormat& canvas) {
  const bool height_ok = config.image_height() == 0 || config.image_height() == canvas.height;
  const bool width_ok = config.image_width() == 0 || config.image_width() == canvas.width;
  const bool channels_ok = config.image_channels() == 0 || config.image_channels() == 1;
  if (!height_ok || !width_ok || !channels_ok || !config.pixel_mean().empty() || !config.pixel_std().empty()) {
    throw ConfigError("data.image_height/image_width/image_channels/pixel_mean/pixel_std apply to data.train_shards; "
                    "the Fashion-MNIST task draws on its own 1 x " + std::to_string(canvas.height) + " x " +
                    std::to_string(canvas.width) + " canvas. Remove them, or convert the task to shards "
                    "(vlm-data convert fashion-mnist) and train on those");
  }
}

// Validation reads eval.shards as the model reads its training images (no
// augmentation), or else the task drawn from the test split.
void load_held_out(const DataConfig& config, const EvalConfig& eval, TrainingData& data) {
  const ImageFormat& f = data.train_set->format();
  if (reads_fashion_canvas(data)) data.test = load_fashion_mnist(config.fashion_mnist_dir(), Split::kTest);
  if (!eval.shards().empty()) {
    ShardTrainOptions options;
    options.format = f;
    options.max_damaged_fraction = config.max_damaged_fraction();
    options.field = "eval.shards";
    data.validation_set = std::make_unique<ShardTrainSet>(existing_shards(eval.shards(), "eval.shards"), *data.tokenizer, options);
  } else if (reads_fashion_canvas(data)) {
    data.validation_task = std::make_unique<Task>(data.kind, data.test, eval.samples(), static_cast<uint64_t>(eval.seed()));
    data.validation_set = std::make_unique<TaskTrainSet>(*data.validation_task, *data.tokenizer);
  } else {
    throw ConfigError("eval.enabled: this model reads " + std::to_string(f.channels) + " x " + std::to_string(f.height) +
                    " x " + std::to_string(f.width) + " images (data.image_*), not the Fashion-MNIST canvas, so "
                    "validation needs held-out shards of your data: set eval.shards (vlm-data convert writes them "
                    "from a held-out folder or split), or eval.enabled: false");
  }
}

}  // namespace

std::unique_ptr<Tokenizer> make_tokenizer(const DataConfig& config, uint32_t* checksum) {
  *checksum = 0;
  if (config.tokenizer_model().empty()) return std::make_unique<WordTokenizer>(caption_words());
  auto tokenizer = std::make_unique<SentencePieceTokenizer>(config.tokenizer_model());
  const std::string bytes = read_file(config.tokenizer_model());
  *checksum = crc32c(bytes.data(), bytes.size());
  return tokenizer;
}

ImageFormat image_format(const DataConfig& config) {
  if (!config.train_shards().empty()) return shard_format(config);
  return fashion_format(kFashionSide, config.task() == DataConfig::SINGLE ? kFashionSide : 2 * kFashionSide);
}

bool reads_fashion_canvas(const TrainingData& data) {
  const ImageFormat& f = data.train_set->format();
  const int64_t canvas_width = data.kind == TaskKind::kSingle ? kFashionSide : 2 * kFashionSide;
  return f.channels == 1 && f.height == kFashionSide && f.width == canvas_width;
}

TaskKind task_kind(DataConfig::Task task) {
  switch (task) {
    case DataConfig::SINGLE: return TaskKind::kSingle;
    case DataConfig::PAIR: return TaskKind::kPair;
    case DataConfig::MIXED: return TaskKind::kMixed;
  }
  return TaskKind::kMixed;
}

std::unique_ptr<TrainingData> load_training_data(const DataConfig& config, const EvalConfig& eval) {
  auto data = std::make_unique<TrainingData>();
  data->kind = task_kind(config.task());
  data->tokenizer = make_tokenizer(config, &data->tokenizer_crc32c);
  if (config.train_shards().empty()) {
    data->train = load_fashion_mnist(config.fashion_mnist_dir(), Split::kTrain);
    data->train_task = std::make_unique<Task>(data->kind, data->train, config.train_samples(),
                                              static_cast<uint64_t>(config.seed()));
    data->train_set = std::make_unique<TaskTrainSet>(*data->train_task, *data->tokenizer);
    check_task_image_settings(config, data->train_set->format());
  } else {
    ShardTrainOptions options;
    options.format = image_format(config);
    options.augment = {config.augment(), config.crop_min_scale()};
    options.max_damaged_fraction = config.max_damaged_fraction();
    options.seed = static_cast<uint64_t>(config.seed());
    data->train_set =
        std::make_unique<ShardTrainSet>(existing_shards(config.train_shards(), "data.train_shards"), *data->tokenizer, options);
  }
  if (eval.enabled()) load_held_out(config, eval, *data);
  return data;
}

DataIdentity data_identity(const TrainingData& data, const DataConfig& config) {
  DataIdentity id;
  id.set_samples(data.train_set->size());
  id.set_seed(config.seed());
  id.set_source(config.train_shards().empty() ? DataConfig::Task_Name(config.task()) : "shards");
  id.set_tokenizer_crc32c(data.tokenizer_crc32c);
  id.set_vocab_size(data.tokenizer->vocab_size());
  return id;
}

}  // namespace vlm
