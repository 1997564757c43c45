#pragma once
// Images in and out: JPEG through libjpeg-turbo, PNG through libpng (the
// Debian libraries made for them), and an antialiased resize. Pixels are
// 8-bit, interleaved (HWC), 1 (grey) or 3 (RGB) channels.

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace vlm {

// A file that is not a JPEG or PNG, or one that is damaged.
class ImageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct Image {
  int height = 0, width = 0, channels = 0;
  std::vector<uint8_t> pixels;  // height * width * channels
};

struct DecodeOptions {
  int channels = 3;  // 1: converted to grey; 3: converted to RGB
  // JPEG only: the decoder may scale by 1/2, 1/4 or 1/8 in the DCT (much
  // faster) as long as the result stays at least this large; 0 = full size.
  int min_height = 0, min_width = 0;
};

// JPEG or PNG, told apart by their signatures.
Image decode_image(const std::string& bytes, const DecodeOptions& options = {});

std::string encode_png(const Image& image);
std::string encode_jpeg(const Image& image, int quality = 90);

// `image` resampled to height x width with a triangle filter widened by the
// scale factor when shrinking (antialiased, like PIL's bilinear).
Image resize(const Image& image, int height, int width);

// The window [top, top+height) x [left, left+width) of `image`.
Image crop(const Image& image, int top, int left, int height, int width);

}  // namespace vlm
