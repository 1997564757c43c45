#pragma once
// A trained model, ready for inference: built from the config a checkpoint
// (or an exported model) records, its weights read and checked, with the
// tokenizer and the image format it was trained with; and the user's own
// images, read as the model reads its training data.

#include <memory>
#include <string>
#include <vector>

#include "data/preprocess.h"
#include "data/tokenizer.h"
#include "model/vlm.h"
#include "proto/config.pb.h"

namespace vlm {

struct TrainedModel {
  VlmModel model{nullptr};
  std::unique_ptr<Tokenizer> tokenizer;
  ImageFormat format;
  TrainConfig config;  // the run's (with --tokenizer's path, if given)
};

// `checkpoint`: a step directory, a checkpoint root or its latest/best file,
// or an exported .vlm file. `tokenizer_model`: the SentencePiece model to
// use instead of the path the run's config names (it must be the same file:
// its checksum is checked). Errors say which file and how to fix it.
TrainedModel load_trained_model(const std::string& checkpoint, const std::string& tokenizer_model = "");

// Images decoded, resized, centre-cropped and normalised as the model was
// trained to read them: [B, C, H, W]. A grey image half as wide as the model's
// images goes in the left half of a black canvas, as the Fashion-MNIST tasks
// draw a single item. An unreadable image is an error naming it.
torch::Tensor read_images(const std::vector<std::string>& paths, const ImageFormat& format);

}  // namespace vlm
