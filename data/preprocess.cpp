#include "data/preprocess.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <sstream>

#include "data/mix_seed.h"

namespace vlm {
namespace {

double uniform(uint64_t seed, uint64_t index) { return (mix_seed(seed, index) >> 11) * 0x1.0p-53; }

// The shorter side scaled to the target, the rest centre-cropped.
Image fit_and_centre(const Image& image, int height, int width) {
  const double scale = std::max(static_cast<double>(height) / image.height, static_cast<double>(width) / image.width);
  const int h = std::max(height, static_cast<int>(std::lround(image.height * scale)));
  const int w = std::max(width, static_cast<int>(std::lround(image.width * scale)));
  const Image scaled = resize(image, h, w);
  return crop(scaled, (h - height) / 2, (w - width) / 2, height, width);
}

// torchvision's RandomResizedCrop: area in [min_scale, 1] of the image, aspect
// ratio log-uniform in [3/4, 4/3]; ten tries, then the centre.
Image random_resized_crop(const Image& image, int height, int width, float min_scale, uint64_t seed) {
  const double area = static_cast<double>(image.height) * image.width;
  for (uint64_t attempt = 0; attempt < 10; ++attempt) {
    const double target = area * (min_scale + (1.0 - min_scale) * uniform(seed, 4 * attempt));
    const double log_ratio = std::log(3.0 / 4) + (std::log(4.0 / 3) - std::log(3.0 / 4)) * uniform(seed, 4 * attempt + 1);
    const double ratio = std::exp(log_ratio);
    const int w = static_cast<int>(std::lround(std::sqrt(target * ratio)));
    const int h = static_cast<int>(std::lround(std::sqrt(target / ratio)));
    if (w < 1 || h < 1 || w > image.width || h > image.height) continue;
    const int top = static_cast<int>(uniform(seed, 4 * attempt + 2) * (image.height - h + 1));
    const int left = static_cast<int>(uniform(seed, 4 * attempt + 3) * (image.width - w + 1));
    return resize(crop(image, std::min(top, image.height - h), std::min(left, image.width - w), h, w), height, width);
  }
  return fit_and_centre(image, height, width);
}

}  // namespace

ImageFormat fashion_format(int height, int width) { return {height, width, 1, {0.2860f}, {0.3530f}}; }

ImageFormat photo_format(int height, int width, int channels) {
  if (channels == 1) return fashion_format(height, width);
  return {height, width, channels, {0.48145466f, 0.4578275f, 0.40821073f}, {0.26862954f, 0.26130258f, 0.27577711f}};
}

bool flip_keeps_caption(const std::string& caption) {
  std::istringstream in(caption);
  for (std::string word; in >> word;) {
    std::string w;
    for (unsigned char c : word) {
      if (std::isalpha(c)) w += static_cast<char>(std::tolower(c));
    }
    if (w == "left" || w == "right" || w == "leftmost" || w == "rightmost") return false;
  }
  return true;
}

void preprocess(const Image& image, const ImageFormat& format, const Augmentation& augment, uint64_t seed,
                bool may_flip, float* out) {
  const Image fitted = augment.enabled ? random_resized_crop(image, format.height, format.width, augment.min_scale, seed)
                                       : fit_and_centre(image, format.height, format.width);
  const bool flip = augment.enabled && may_flip && (mix_seed(seed, 1000) & 1);
  const int h = format.height, w = format.width, c = format.channels;
  for (int ch = 0; ch < c; ++ch) {
    const float mean = format.mean[format.mean.size() == 1 ? 0 : ch];
    const float std = format.std[format.std.size() == 1 ? 0 : ch];
    float* plane = out + static_cast<size_t>(ch) * h * w;
    for (int y = 0; y < h; ++y) {
      const uint8_t* row = fitted.pixels.data() + static_cast<size_t>(y) * w * c;
      for (int x = 0; x < w; ++x) {
        const uint8_t v = row[(flip ? w - 1 - x : x) * c + ch];
        plane[y * w + x] = (v / 255.0f - mean) / std;  // the expression data/batch.cpp uses: bit-equal inputs
      }
    }
  }
}

}  // namespace vlm
