#include "data/image.h"

// clang-format off
#include <cstdio>   // jpeglib.h needs FILE and size_t first
#include <jpeglib.h>
// clang-format on
#include <png.h>

#include <algorithm>
#include <cmath>
#include <csetjmp>
#include <cstring>

namespace vlm {
namespace {

bool is_png(const std::string& b) { return b.size() >= 8 && std::memcmp(b.data(), "\x89PNG\r\n\x1a\n", 8) == 0; }
bool is_jpeg(const std::string& b) { return b.size() >= 3 && std::memcmp(b.data(), "\xff\xd8\xff", 3) == 0; }

void check_channels(int channels) {
  if (channels != 1 && channels != 3) {
    throw ImageError("images have 1 (grey) or 3 (RGB) channels, not " + std::to_string(channels));
  }
}

// libjpeg reports errors through a callback that must not return: it jumps
// back to the decode call, which then throws. No C++ object with a destructor
// is created between setjmp and the libjpeg calls that may jump.
struct JpegErrors {
  jpeg_error_mgr manager;
  jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

void on_jpeg_error(j_common_ptr info) {
  auto* errors = reinterpret_cast<JpegErrors*>(info->err);
  info->err->format_message(info, errors->message);
  std::longjmp(errors->jump, 1);
}

// Pixels a decoded image may hold (16384 x 8192): a few hundred bytes of
// header can declare 60000 x 60000, gigabytes per loader thread.
constexpr uint64_t kMaxDecodedPixels = uint64_t{1} << 27;

void check_size(uint64_t height, uint64_t width, const char* format) {
  if (height * width <= kMaxDecodedPixels) return;
  throw ImageError(std::string(format) + " of " + std::to_string(width) + " x " + std::to_string(height) +
                   " pixels, more than the " + std::to_string(kMaxDecodedPixels) +
                   " vlmtrain decodes (a corrupt header, or an image to shrink before training)");
}

// libjpeg decodes a truncated or corrupt stream to the end with a warning,
// filling the rest with grey; for training data that is damage, so a warning
// (level -1) stops the decode like an error. Trace messages (>= 0) are ignored.
void on_jpeg_message(j_common_ptr info, int level) {
  if (level < 0) on_jpeg_error(info);
}

Image decode_jpeg(const std::string& bytes, const DecodeOptions& options) {
  jpeg_decompress_struct info;
  JpegErrors errors;
  info.err = jpeg_std_error(&errors.manager);
  errors.manager.error_exit = on_jpeg_error;
  errors.manager.emit_message = on_jpeg_message;
  Image image;
  if (setjmp(errors.jump)) {
    jpeg_destroy_decompress(&info);
    throw ImageError(std::string("bad JPEG: ") + errors.message);
  }
  jpeg_create_decompress(&info);
  jpeg_mem_src(&info, reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size());
  jpeg_read_header(&info, TRUE);
  info.out_color_space = options.channels == 1 ? JCS_GRAYSCALE : JCS_RGB;
  // The largest DCT scale-down that keeps the requested size.
  for (int denom = 8; denom > 1; denom /= 2) {
    if (options.min_height > 0 && options.min_width > 0 &&
        static_cast<int>(info.image_height) / denom >= options.min_height &&
        static_cast<int>(info.image_width) / denom >= options.min_width) {
      info.scale_num = 1;
      info.scale_denom = static_cast<unsigned>(denom);
      break;
    }
  }
  jpeg_start_decompress(&info);
  try {
    check_size(info.output_height, info.output_width, "JPEG");
  } catch (const ImageError&) {
    jpeg_destroy_decompress(&info);
    throw;
  }
  image.height = static_cast<int>(info.output_height);
  image.width = static_cast<int>(info.output_width);
  image.channels = options.channels;
  image.pixels.resize(static_cast<size_t>(image.height) * image.width * image.channels);
  const size_t stride = static_cast<size_t>(image.width) * image.channels;
  while (info.output_scanline < info.output_height) {
    JSAMPROW row = image.pixels.data() + info.output_scanline * stride;
    jpeg_read_scanlines(&info, &row, 1);
  }
  jpeg_finish_decompress(&info);
  jpeg_destroy_decompress(&info);
  return image;
}

// libpng's simplified API reads any PNG (palette, 16-bit, alpha) into the
// format asked for; asking for one without alpha composites onto black.
Image decode_png(const std::string& bytes, const DecodeOptions& options) {
  png_image png{};
  png.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_memory(&png, bytes.data(), bytes.size())) {
    throw ImageError(std::string("bad PNG: ") + png.message);
  }
  png.format = options.channels == 1 ? PNG_FORMAT_GRAY : PNG_FORMAT_RGB;
  try {
    check_size(png.height, png.width, "PNG");
  } catch (const ImageError&) {
    png_image_free(&png);
    throw;
  }
  Image image;
  image.height = static_cast<int>(png.height);
  image.width = static_cast<int>(png.width);
  image.channels = options.channels;
  image.pixels.resize(PNG_IMAGE_SIZE(png));
  if (!png_image_finish_read(&png, nullptr, image.pixels.data(), 0, nullptr)) {
    const std::string message = png.message;
    png_image_free(&png);
    throw ImageError("bad PNG: " + message);
  }
  return image;
}

// Weights of a 1-D triangle filter from `in` samples to `out` samples.
struct Taps {
  std::vector<int> first;      // first input index of each output
  std::vector<int> count;      // inputs per output
  std::vector<float> weights;  // count[i] weights per output, `stride` apart
  int stride = 0;
};

Taps triangle_taps(int in, int out) {
  const double scale = static_cast<double>(in) / out;
  const double support = std::max(scale, 1.0);  // widened when shrinking: antialiasing
  Taps taps;
  taps.stride = static_cast<int>(std::ceil(support)) * 2 + 1;
  taps.first.resize(out);
  taps.count.resize(out);
  taps.weights.assign(static_cast<size_t>(out) * taps.stride, 0.0f);
  for (int o = 0; o < out; ++o) {
    const double center = (o + 0.5) * scale;
    const int lo = std::max(0, static_cast<int>(std::floor(center - support)));
    const int hi = std::min(in, static_cast<int>(std::ceil(center + support)));
    double total = 0;
    int n = 0;
    for (int i = lo; i < hi && n < taps.stride; ++i, ++n) {
      const double w = std::max(0.0, 1.0 - std::abs((i + 0.5 - center) / support));
      taps.weights[static_cast<size_t>(o) * taps.stride + n] = static_cast<float>(w);
      total += w;
    }
    for (int k = 0; k < n; ++k) taps.weights[static_cast<size_t>(o) * taps.stride + k] /= static_cast<float>(total);
    taps.first[o] = lo;
    taps.count[o] = n;
  }
  return taps;
}

}  // namespace

Image decode_image(const std::string& bytes, const DecodeOptions& options) {
  check_channels(options.channels);
  if (is_jpeg(bytes)) return decode_jpeg(bytes, options);
  if (is_png(bytes)) return decode_png(bytes, options);
  throw ImageError("not a JPEG or PNG file (" + std::to_string(bytes.size()) + " bytes, no known signature)");
}

std::string encode_png(const Image& image) {
  check_channels(image.channels);
  png_image png{};
  png.version = PNG_IMAGE_VERSION;
  png.width = static_cast<png_uint_32>(image.width);
  png.height = static_cast<png_uint_32>(image.height);
  png.format = image.channels == 1 ? PNG_FORMAT_GRAY : PNG_FORMAT_RGB;
  png_alloc_size_t size = 0;
  if (!png_image_write_to_memory(&png, nullptr, &size, 0, image.pixels.data(), 0, nullptr)) {
    throw ImageError(std::string("PNG encoding failed: ") + png.message);
  }
  std::string out(size, '\0');
  if (!png_image_write_to_memory(&png, out.data(), &size, 0, image.pixels.data(), 0, nullptr)) {
    throw ImageError(std::string("PNG encoding failed: ") + png.message);
  }
  out.resize(size);
  return out;
}

std::string encode_jpeg(const Image& image, int quality) {
  check_channels(image.channels);
  jpeg_compress_struct info;
  JpegErrors errors;
  info.err = jpeg_std_error(&errors.manager);
  errors.manager.error_exit = on_jpeg_error;
  unsigned char* buffer = nullptr;
  unsigned long size = 0;
  if (setjmp(errors.jump)) {
    jpeg_destroy_compress(&info);
    std::free(buffer);
    throw ImageError(std::string("JPEG encoding failed: ") + errors.message);
  }
  jpeg_create_compress(&info);
  jpeg_mem_dest(&info, &buffer, &size);
  info.image_width = static_cast<JDIMENSION>(image.width);
  info.image_height = static_cast<JDIMENSION>(image.height);
  info.input_components = image.channels;
  info.in_color_space = image.channels == 1 ? JCS_GRAYSCALE : JCS_RGB;
  jpeg_set_defaults(&info);
  jpeg_set_quality(&info, quality, TRUE);
  jpeg_start_compress(&info, TRUE);
  const size_t stride = static_cast<size_t>(image.width) * image.channels;
  while (info.next_scanline < info.image_height) {
    JSAMPROW row = const_cast<uint8_t*>(image.pixels.data()) + info.next_scanline * stride;
    jpeg_write_scanlines(&info, &row, 1);
  }
  jpeg_finish_compress(&info);
  jpeg_destroy_compress(&info);
  std::string out(reinterpret_cast<const char*>(buffer), size);
  std::free(buffer);
  return out;
}

Image resize(const Image& image, int height, int width) {
  if (height == image.height && width == image.width) return image;
  const int c = image.channels;
  const Taps across = triangle_taps(image.width, width), down = triangle_taps(image.height, height);
  // Horizontal pass into floats, then vertical pass into bytes.
  std::vector<float> rows(static_cast<size_t>(image.height) * width * c);
  for (int y = 0; y < image.height; ++y) {
    const uint8_t* src = image.pixels.data() + static_cast<size_t>(y) * image.width * c;
    float* dst = rows.data() + static_cast<size_t>(y) * width * c;
    for (int x = 0; x < width; ++x) {
      const float* w = across.weights.data() + static_cast<size_t>(x) * across.stride;
      for (int ch = 0; ch < c; ++ch) {
        float sum = 0;
        for (int k = 0; k < across.count[x]; ++k) sum += w[k] * src[(across.first[x] + k) * c + ch];
        dst[x * c + ch] = sum;
      }
    }
  }
  Image out{height, width, c, std::vector<uint8_t>(static_cast<size_t>(height) * width * c)};
  const size_t row_size = static_cast<size_t>(width) * c;
  for (int y = 0; y < height; ++y) {
    const float* w = down.weights.data() + static_cast<size_t>(y) * down.stride;
    uint8_t* dst = out.pixels.data() + y * row_size;
    for (size_t i = 0; i < row_size; ++i) {
      float sum = 0;
      for (int k = 0; k < down.count[y]; ++k) sum += w[k] * rows[(down.first[y] + k) * row_size + i];
      dst[i] = static_cast<uint8_t>(std::clamp(std::lround(sum), 0L, 255L));
    }
  }
  return out;
}

Image crop(const Image& image, int top, int left, int height, int width) {
  if (top < 0 || left < 0 || top + height > image.height || left + width > image.width) {
    throw ImageError("crop " + std::to_string(height) + "x" + std::to_string(width) + " at (" + std::to_string(top) +
                     "," + std::to_string(left) + ") does not fit a " + std::to_string(image.height) + "x" +
                     std::to_string(image.width) + " image");
  }
  const int c = image.channels;
  Image out{height, width, c, std::vector<uint8_t>(static_cast<size_t>(height) * width * c)};
  for (int y = 0; y < height; ++y) {
    std::memcpy(out.pixels.data() + static_cast<size_t>(y) * width * c,
                image.pixels.data() + (static_cast<size_t>(top + y) * image.width + left) * c,
                static_cast<size_t>(width) * c);
  }
  return out;
}

}  // namespace vlm
