#include "data/idx.h"

#include <zlib.h>

#include <array>
#include <memory>

namespace vlm {
namespace {

constexpr uint32_t kImagesMagic = 0x00000803;
constexpr uint32_t kLabelsMagic = 0x00000801;
constexpr uint32_t kMaxItems = 10'000'000;  // guards allocations against corrupt headers

// gzread reads gzip and plain files alike.
class GzFile {
 public:
  explicit GzFile(const std::string& path) : path_(path), file_(gzopen(path.c_str(), "rb")) {
    if (file_ == nullptr) {
      throw DataError(path + ": cannot open. HINT: install the Debian package dataset-fashion-mnist "
                      "(scripts/install-deps.sh) or set data.fashion_mnist_dir");
    }
  }
  ~GzFile() { gzclose(file_); }
  GzFile(const GzFile&) = delete;
  GzFile& operator=(const GzFile&) = delete;

  void read(void* out, size_t bytes, const char* what) {
    size_t done = 0;
    while (done < bytes) {
      const unsigned chunk = static_cast<unsigned>(std::min<size_t>(bytes - done, 1u << 30));
      const int got = gzread(file_, static_cast<char*>(out) + done, chunk);
      if (got < 0) {
        int code = 0;
        throw DataError(path_ + ": corrupt gzip data while reading " + what + ": " + gzerror(file_, &code));
      }
      if (got == 0) {
        throw DataError(path_ + ": truncated: expected " + std::to_string(bytes) + " bytes of " + what +
                        ", found " + std::to_string(done));
      }
      done += static_cast<size_t>(got);
    }
  }

  uint32_t read_u32(const char* what) {
    std::array<unsigned char, 4> b{};
    read(b.data(), 4, what);
    return (uint32_t{b[0]} << 24) | (uint32_t{b[1]} << 16) | (uint32_t{b[2]} << 8) | b[3];
  }

  void expect_end() {
    char extra = 0;
    if (gzread(file_, &extra, 1) != 0) throw DataError(path_ + ": unexpected data after the last item");
  }

  const std::string& path() const { return path_; }

 private:
  std::string path_;
  gzFile file_;
};

void expect_magic(GzFile& file, uint32_t expected, const char* kind) {
  const uint32_t magic = file.read_u32("the magic number");
  if (magic != expected) {
    char text[128];
    std::snprintf(text, sizeof text, ": bad magic number 0x%08x, expected 0x%08x (%s)", magic, expected, kind);
    throw DataError(file.path() + text);
  }
}

}  // namespace

torch::Tensor read_idx_images(const std::string& path) {
  GzFile file(path);
  expect_magic(file, kImagesMagic, "IDX3 images");
  const uint32_t count = file.read_u32("the image count");
  const uint32_t rows = file.read_u32("the row count");
  const uint32_t cols = file.read_u32("the column count");
  if (count == 0 || count > kMaxItems || rows == 0 || rows > 4096 || cols == 0 || cols > 4096) {
    throw DataError(path + ": implausible header: " + std::to_string(count) + " images of " +
                    std::to_string(rows) + "x" + std::to_string(cols));
  }
  torch::Tensor images = torch::empty({count, rows, cols}, torch::kUInt8);
  file.read(images.data_ptr<uint8_t>(), images.numel(), "pixels");
  file.expect_end();
  return images;
}

torch::Tensor read_idx_labels(const std::string& path, int64_t classes) {
  GzFile file(path);
  expect_magic(file, kLabelsMagic, "IDX1 labels");
  const uint32_t count = file.read_u32("the label count");
  if (count == 0 || count > kMaxItems) {
    throw DataError(path + ": implausible header: " + std::to_string(count) + " labels");
  }
  torch::Tensor raw = torch::empty({count}, torch::kUInt8);
  file.read(raw.data_ptr<uint8_t>(), count, "labels");
  file.expect_end();
  const int64_t largest = raw.max().item<int64_t>();
  if (largest >= classes) {
    throw DataError(path + ": label " + std::to_string(largest) + " out of range [0, " +
                    std::to_string(classes) + ")");
  }
  return raw.to(torch::kLong);
}

}  // namespace vlm
