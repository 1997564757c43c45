#pragma once
// A decoded image made into model input: resized and cropped to the
// configured size, optionally augmented, normalised, channels first.

#include <cstdint>
#include <string>
#include <vector>

#include "data/image.h"

namespace vlm {

struct ImageFormat {
  int height = 28, width = 28, channels = 1;
  std::vector<float> mean{0.2860f}, std{0.3530f};  // one per channel (or one for all)
};

struct Augmentation {
  bool enabled = false;
  float min_scale = 0.5f;  // of the area kept by the random crop
};

// Fashion-MNIST's pixel statistics, and CLIP's (for RGB photos).
ImageFormat fashion_format(int height, int width);
ImageFormat photo_format(int height, int width, int channels);

// Whether a horizontal flip keeps `caption` true: not when it names a side.
bool flip_keeps_caption(const std::string& caption);

// Writes `image` as channels x height x width floats ((x/255 - mean)/std) to
// `out`. Without augmentation: the shorter side resized to fit, then the
// centre cropped (an image already of the size is copied as is). With it:
// a crop of random area and aspect ratio drawn from `seed`, resized, and a
// flip (when `may_flip`) decided by the same seed.
void preprocess(const Image& image, const ImageFormat& format, const Augmentation& augment, uint64_t seed,
                bool may_flip, float* out);

}  // namespace vlm
