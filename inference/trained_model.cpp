#include "inference/trained_model.h"

#include <filesystem>

#include "checkpoint/reader.h"
#include "checkpoint/restore.h"
#include "data/files.h"
#include "data/idx.h"
#include "data/image.h"
#include "model/parameters.h"
#include "model/spec.h"
#include "proto/config_loader.h"
#include "trainer/training_data.h"

namespace fs = std::filesystem;

namespace vlm {

TrainedModel load_trained_model(const std::string& checkpoint, const std::string& tokenizer_model) {
  const CheckpointReader reader(resolve_checkpoint("", checkpoint));
  TrainedModel out;
  out.config = reader.manifest().config();
  // Its checksum holds, but a file written by hand or another tool could still
  // carry a model no config file would pass (heads 0): the same checks first.
  try {
    parse_config(resolved_config_text(out.config), checkpoint + " (its stored config)");
  } catch (const ConfigError& e) {
    throw CheckpointError(std::string(e.what()) + ". HINT: this model was not written by vlm-train; retrain or re-export it");
  }
  DataConfig data = out.config.data();
  if (!tokenizer_model.empty()) {
    data.set_tokenizer_model(tokenizer_model);
    out.config.mutable_data()->set_tokenizer_model(tokenizer_model);  // for whatever reads the run's data next
  }
  if (!tokenizer_model.empty() && !fs::exists(tokenizer_model)) {
    throw DataError("--tokenizer " + tokenizer_model + ": no such file");
  }
  if (!data.tokenizer_model().empty() && !fs::exists(data.tokenizer_model())) {
    throw DataError(checkpoint + " was trained with the tokenizer " + data.tokenizer_model() +
                    ", which is not there. HINT: --tokenizer PATH (the same file, wherever it is now)");
  }
  uint32_t checksum = 0;
  out.tokenizer = make_tokenizer(data, &checksum);
  DataIdentity now;
  now.set_tokenizer_crc32c(checksum);
  now.set_vocab_size(out.tokenizer->vocab_size());
  check_same_tokenizer(reader, now);
  out.format = image_format(data);
  const ModelSpec spec = model_spec(out.config.model(), out.format.height, out.format.width, out.format.channels,
                                    out.tokenizer->vocab_size());
  out.model = VlmModel(spec);
  restore_parameters(reader, out.config.model(), unique_parameters(*out.model), nullptr);
  out.model->eval();
  return out;
}

torch::Tensor read_images(const std::vector<std::string>& paths, const ImageFormat& f) {
  torch::Tensor images = torch::empty({static_cast<int64_t>(paths.size()), f.channels, f.height, f.width});
  const int64_t size = static_cast<int64_t>(f.channels) * f.height * f.width;
  for (size_t i = 0; i < paths.size(); ++i) {
    try {
      Image image = decode_image(read_file(paths[i]), DecodeOptions{f.channels, f.height, f.width});
      if (image.height == f.height && image.width * 2 == f.width && f.channels == 1) {
        // One item on a two-item canvas (the Fashion-MNIST tasks): the left slot, as the tasks draw it.
        Image canvas{image.height, f.width, 1, std::vector<uint8_t>(static_cast<size_t>(f.height * f.width), 0)};
        for (int y = 0; y < image.height; ++y) {
          std::copy_n(image.pixels.begin() + y * image.width, image.width, canvas.pixels.begin() + y * f.width);
        }
        image = std::move(canvas);
      }
      preprocess(image, f, Augmentation{}, 0, false, images.data_ptr<float>() + static_cast<int64_t>(i) * size);
    } catch (const ImageError& e) {
      throw ImageError(paths[i] + ": " + e.what());
    }
  }
  return images;
}

}  // namespace vlm
