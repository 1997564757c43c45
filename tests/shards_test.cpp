// WebDataset shards without LibTorch: brace patterns, tar writing and
// indexing (also against GNU tar), damaged archives, sample grouping, image
// codecs and resizing.

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "data/brace.h"
#include "data/image.h"
#include "data/preprocess.h"
#include "data/shards.h"
#include "data/tar.h"

namespace vlm {
namespace {

namespace fs = std::filesystem;

fs::path fresh_dir(const std::string& name) {
  const fs::path dir = fs::temp_directory_path() / ("vlm_shards_test_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

std::string file_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

void put_bytes(const fs::path& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

// A smooth RGB test picture (JPEG-friendly) of the given size.
Image gradient(int height, int width, int channels) {
  Image image{height, width, channels, std::vector<uint8_t>(static_cast<size_t>(height) * width * channels)};
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      for (int c = 0; c < channels; ++c) {
        image.pixels[(static_cast<size_t>(y) * width + x) * channels + c] =
            static_cast<uint8_t>((x * 255 / std::max(1, width - 1) + c * 60 + y) % 256);
      }
    }
  }
  return image;
}

// Samples `n` with a PNG image each, written as one shard.
fs::path write_shard(const fs::path& dir, const std::string& name, int n) {
  const fs::path path = dir / name;
  TarWriter tar(path.string());
  for (int i = 0; i < n; ++i) {
    const std::string key = "sample" + std::to_string(i);
    tar.add(key + ".png", encode_png(gradient(8, 8 + i, 3)));
    tar.add(key + ".txt", "caption number " + std::to_string(i));
  }
  tar.finish();
  return path;
}

TEST(Braces, RangesKeepPaddingAndGroupsMultiply) {
  EXPECT_EQ(expand_braces("d/shards-{00000..00002}.tar"),
            (std::vector<std::string>{"d/shards-00000.tar", "d/shards-00001.tar", "d/shards-00002.tar"}));
  EXPECT_EQ(expand_braces("{a,b}-{8..10}"), (std::vector<std::string>{"a-8", "a-9", "a-10", "b-8", "b-9", "b-10"}));
  EXPECT_EQ(expand_braces("plain.tar"), (std::vector<std::string>{"plain.tar"}));
  EXPECT_EQ(expand_braces("x{007..009}").back(), "x009");
  EXPECT_EQ(expand_shard_patterns({"a{1..2}", "b"}), (std::vector<std::string>{"a1", "a2", "b"}));
}

TEST(Braces, BadPatternsAreNamed) {
  for (const char* bad : {"d/{0..", "d/0}", "{3..1}", "{a..b}", "{{1..2}}", "{0..99999999999}"}) {
    try {
      expand_braces(bad);
      ADD_FAILURE() << bad << " was accepted";
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find(bad), std::string::npos) << e.what();
    }
  }
}

TEST(Tar, RoundTripAndGnuTarAgrees) {
  const fs::path dir = fresh_dir("roundtrip");
  const std::string long_name = std::string(120, 'd') + "/" + std::string(90, 'n') + ".txt";
  {
    TarWriter tar((dir / "a.tar").string());
    tar.add("one.txt", "first");
    tar.add("empty.txt", "");
    tar.add("block.bin", std::string(512, 'x'));
    tar.add(long_name, "split into prefix and name");
    tar.finish();
  }
  EXPECT_FALSE(fs::exists(dir / "a.tar.partial"));
  const TarIndex index = index_tar((dir / "a.tar").string());
  EXPECT_TRUE(index.damage.empty());
  ASSERT_EQ(index.members.size(), 4u);
  const TarFile file((dir / "a.tar").string());
  EXPECT_EQ(file.read(index.members[0]), "first");
  EXPECT_EQ(file.read(index.members[1]), "");
  EXPECT_EQ(file.read(index.members[2]), std::string(512, 'x'));
  EXPECT_EQ(index.members[3].name, long_name);
  EXPECT_EQ(file.read(index.members[3]), "split into prefix and name");

  // GNU tar lists and extracts what we wrote ...
  ASSERT_EQ(std::system(("tar -xf " + (dir / "a.tar").string() + " -C " + dir.string()).c_str()), 0);
  EXPECT_EQ(file_bytes(dir / long_name), "split into prefix and name");
  // ... and we read what GNU tar writes, long names (GNU and pax) included.
  const std::string very_long = std::string(100, 'u') + "/" + std::string(100, 'v') + "/" + std::string(100, 'w') + ".txt";
  fs::create_directories((dir / very_long).parent_path());
  put_bytes(dir / very_long, "gnu long name");
  for (const char* format : {"gnu", "pax"}) {
    const fs::path out = dir / (std::string(format) + ".tar");
    ASSERT_EQ(std::system(("cd " + dir.string() + " && tar --format=" + format + " -cf " + out.string() + " " +
                           very_long + " one.txt")
                              .c_str()),
              0);
    const TarIndex gnu = index_tar(out.string());
    EXPECT_TRUE(gnu.damage.empty()) << format;
    ASSERT_EQ(gnu.members.size(), 2u) << format;
    EXPECT_EQ(gnu.members[0].name, very_long) << format;
    EXPECT_EQ(TarFile(out.string()).read(gnu.members[0]), "gnu long name") << format;
    EXPECT_EQ(TarFile(out.string()).read(gnu.members[1]), "first") << format;
  }
  fs::remove_all(dir);
}

TEST(Tar, AnUnfinishedWriterLeavesNoShard) {
  const fs::path dir = fresh_dir("unfinished");
  {
    TarWriter tar((dir / "b.tar").string());
    tar.add("x.txt", "never finished");
  }
  EXPECT_TRUE(fs::is_empty(dir));
  fs::remove_all(dir);
}

TEST(Tar, DamagedArchivesKeepWhatIsIntact) {
  const fs::path dir = fresh_dir("damage");
  const fs::path good = write_shard(dir, "good.tar", 6);
  const std::string bytes = file_bytes(good);
  const TarIndex intact = index_tar(good.string());
  ASSERT_EQ(intact.members.size(), 12u);

  // Cut inside the 4th member's data: the three members before it survive.
  const TarMember& cut_in = intact.members[3];
  put_bytes(dir / "cut.tar", bytes.substr(0, cut_in.offset + cut_in.size / 2));
  TarIndex cut = index_tar((dir / "cut.tar").string());
  EXPECT_EQ(cut.members.size(), 3u);
  ASSERT_EQ(cut.damage.size(), 1u);
  EXPECT_NE(cut.damage[0].what.find("truncated member " + cut_in.name), std::string::npos) << cut.damage[0].what;

  // Cut at a member boundary: every member whole, but the end marker is missing.
  put_bytes(dir / "boundary.tar", bytes.substr(0, cut_in.offset - 512));
  cut = index_tar((dir / "boundary.tar").string());
  EXPECT_EQ(cut.members.size(), 3u);
  ASSERT_EQ(cut.damage.size(), 1u);
  EXPECT_NE(cut.damage[0].what.find("no end-of-archive marker"), std::string::npos);

  // A flipped bit in the 5th header: that member is lost, the reader resumes at the 6th.
  std::string flipped = bytes;
  flipped[intact.members[4].offset - 512 + 3] ^= 0x10;  // inside the name field
  put_bytes(dir / "flipped.tar", flipped);
  const TarIndex resumed = index_tar((dir / "flipped.tar").string());
  ASSERT_EQ(resumed.damage.size(), 1u);
  EXPECT_NE(resumed.damage[0].what.find("damaged header"), std::string::npos);
  ASSERT_EQ(resumed.members.size(), 11u);
  EXPECT_EQ(resumed.members[4].name, intact.members[5].name);
  EXPECT_EQ(resumed.members.back().offset, intact.members.back().offset);

  EXPECT_THROW(index_tar((dir / "missing.tar").string()), TarError);
  fs::remove_all(dir);
}

TEST(Shards, MembersGroupIntoSamplesAndIncompleteOnesAreDamage) {
  const fs::path dir = fresh_dir("grouping");
  const fs::path a = write_shard(dir, "a.tar", 3);
  {
    TarWriter tar((dir / "b.tar").string());
    tar.add("x/k1.jpg", encode_jpeg(gradient(16, 16, 3)));
    tar.add("x/k1.txt", "with json");
    tar.add("x/k1.json", "{}");
    tar.add("x/k2.png", encode_png(gradient(4, 4, 1)));  // no caption
    tar.add("x/k3.txt", "no image");
    tar.add("x/k4.png", encode_png(gradient(4, 4, 1)));
    tar.add("x/k4.seg.png", encode_png(gradient(4, 4, 1)));  // another field of the sample, not its image
    tar.add("x/k4.txt", "dotted extension");
    tar.finish();
  }
  const ShardSet set = index_shards({a.string(), (dir / "b.tar").string(), (dir / "absent.tar").string()});
  ASSERT_EQ(set.samples.size(), 5u);
  EXPECT_EQ(set.samples[0].key, "sample0");
  EXPECT_EQ(set.samples[3].key, "x/k1");
  EXPECT_EQ(set.samples[3].shard, 1);
  EXPECT_GT(set.samples[3].json.size, 0u);
  EXPECT_EQ(set.samples[4].key, "x/k4");
  EXPECT_EQ(set.samples[4].image.name, "x/k4.png");
  ASSERT_EQ(set.damage.size(), 3u);
  EXPECT_EQ(set.damage[0].key, "x/k2");
  EXPECT_NE(set.damage[0].what.find("no caption"), std::string::npos);
  EXPECT_EQ(set.damage[1].key, "x/k3");
  EXPECT_NE(set.damage[1].what.find("no image"), std::string::npos);
  EXPECT_NE(set.damage[2].what.find("unreadable shard"), std::string::npos);
  EXPECT_EQ(set.damage[2].shard, (dir / "absent.tar").string());

  ShardReader reader(set);
  EXPECT_EQ(reader.read(1, set.samples[4].caption), "dotted extension");
  EXPECT_EQ(split_key("a/b/000017.seg.png"), (std::pair<std::string, std::string>{"a/b/000017", "seg.png"}));
  fs::remove_all(dir);
}

TEST(Images, PngIsLosslessInGreyAndRgb) {
  for (int channels : {1, 3}) {
    const Image image = gradient(13, 21, channels);
    const Image back = decode_image(encode_png(image), {channels});
    EXPECT_EQ(back.height, 13);
    EXPECT_EQ(back.width, 21);
    EXPECT_EQ(back.pixels, image.pixels) << channels << " channels";
  }
  // Grey PNG read as RGB: every channel the grey value.
  const Image grey = gradient(5, 7, 1);
  const Image rgb = decode_image(encode_png(grey), {3});
  ASSERT_EQ(rgb.channels, 3);
  for (size_t i = 0; i < grey.pixels.size(); ++i) EXPECT_EQ(rgb.pixels[i * 3 + 1], grey.pixels[i]);
}

TEST(Images, JpegIsCloseAndScalesInTheDct) {
  const Image image = gradient(64, 96, 3);
  const std::string jpeg = encode_jpeg(image, 95);
  const Image back = decode_image(jpeg, {3});
  ASSERT_EQ(back.pixels.size(), image.pixels.size());
  double error = 0;
  for (size_t i = 0; i < image.pixels.size(); ++i) error += std::abs(back.pixels[i] - image.pixels[i]);
  EXPECT_LT(error / image.pixels.size(), 4.0);
  // At least 16x16 wanted: libjpeg may decode at 1/4 (16x24), not 1/8 (8x12).
  const Image small = decode_image(jpeg, {3, 16, 16});
  EXPECT_EQ(small.height, 16);
  EXPECT_EQ(small.width, 24);
}

TEST(Images, DamagedFilesAreErrors) {
  const std::string jpeg = encode_jpeg(gradient(64, 64, 3));
  const std::string png = encode_png(gradient(64, 64, 3));
  EXPECT_THROW(decode_image("not an image at all"), ImageError);
  EXPECT_THROW(decode_image(jpeg.substr(0, jpeg.size() / 2)), ImageError);
  EXPECT_THROW(decode_image(png.substr(0, png.size() / 2)), ImageError);
  std::string flipped = png;
  flipped[png.size() / 2] ^= 0x55;  // the zlib stream's CRC no longer matches
  EXPECT_THROW(decode_image(flipped), ImageError);
  EXPECT_THROW(decode_image(png, {2}), ImageError);
}

// The CRC-32 of PNG chunks (ISO 3309), bit by bit.
uint32_t png_crc(const std::string& bytes) {
  uint32_t c = 0xFFFFFFFFu;
  for (unsigned char b : bytes) {
    c ^= b;
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
  }
  return ~c;
}

void put_big_endian(std::string& bytes, size_t at, uint64_t value, int size) {
  for (int i = 0; i < size; ++i) bytes[at + i] = static_cast<char>(value >> (8 * (size - 1 - i)));
}

// A few hundred bytes may declare a 60000 x 60000 image (a decompression
// bomb): refused from the header, before gigabytes are allocated.
TEST(Images, HugeDeclaredSizesAreRefusedBeforeDecoding) {
  std::string png = encode_png(gradient(4, 4, 3));
  ASSERT_EQ(png.substr(12, 4), "IHDR");
  put_big_endian(png, 16, 60000, 4);  // width
  put_big_endian(png, 20, 60000, 4);  // height
  put_big_endian(png, 29, png_crc(png.substr(12, 17)), 4);
  try {
    decode_image(png, {3});
    FAIL() << "a 60000 x 60000 PNG was decoded";
  } catch (const ImageError& e) {
    EXPECT_NE(std::string(e.what()).find("PNG of 60000 x 60000 pixels, more than the 134217728"), std::string::npos)
        << e.what();
  }
  std::string jpeg = encode_jpeg(gradient(16, 16, 3));
  const size_t frame = jpeg.find("\xFF\xC0");
  ASSERT_NE(frame, std::string::npos);
  put_big_endian(jpeg, frame + 5, 60000, 2);  // height
  put_big_endian(jpeg, frame + 7, 60000, 2);  // width
  try {
    decode_image(jpeg, {3});
    FAIL() << "a 60000 x 60000 JPEG was decoded";
  } catch (const ImageError& e) {
    EXPECT_NE(std::string(e.what()).find("JPEG of 60000 x 60000 pixels"), std::string::npos) << e.what();
  }
}

TEST(Images, ResizeKeepsFlatColourAndAveragesWhenShrinking) {
  Image flat{10, 30, 3, std::vector<uint8_t>(10 * 30 * 3, 77)};
  const Image small = resize(flat, 4, 9);
  EXPECT_EQ(small.pixels, std::vector<uint8_t>(4 * 9 * 3, 77));
  const Image big = resize(flat, 25, 31);
  EXPECT_EQ(big.pixels, std::vector<uint8_t>(25 * 31 * 3, 77));
  // A one-pixel checkerboard halved: antialiasing gives grey, not a sampled colour.
  Image board{16, 16, 1, std::vector<uint8_t>(256)};
  for (int i = 0; i < 256; ++i) board.pixels[i] = ((i / 16 + i % 16) % 2) * 255;
  for (uint8_t v : resize(board, 8, 8).pixels) EXPECT_NEAR(v, 127.5, 32);
  const Image part = crop(gradient(10, 10, 1), 2, 3, 4, 5);
  EXPECT_EQ(part.pixels[0], gradient(10, 10, 1).pixels[2 * 10 + 3]);
  EXPECT_THROW(crop(flat, 8, 0, 4, 4), ImageError);
}

TEST(Preprocess, FitsTheShorterSideCropsTheCentreAndNormalises) {
  // 20 x 40, left half black, right half white; the target 10 x 10 is its centre.
  Image image{20, 40, 3, std::vector<uint8_t>(20 * 40 * 3)};
  for (int y = 0; y < 20; ++y) {
    for (int x = 20; x < 40; ++x) image.pixels[(y * 40 + x) * 3 + 1] = 255;  // green channel only
  }
  ImageFormat format{10, 10, 3, {0.5f}, {0.25f}};
  std::vector<float> out(3 * 10 * 10);
  preprocess(image, format, {}, 0, true, out.data());
  EXPECT_FLOAT_EQ(out[0], -2.0f);                // red plane, black: (0 - 0.5) / 0.25
  EXPECT_FLOAT_EQ(out[100 + 0], -2.0f);          // green plane, left edge of the centre: still black
  EXPECT_FLOAT_EQ(out[100 + 9], 2.0f);           // green plane, right edge: white
  // Grey at the configured size is copied as is: (v/255 - mean)/std exactly.
  Image grey{2, 2, 1, {0, 51, 102, 255}};
  std::vector<float> g(4);
  preprocess(grey, fashion_format(2, 2), {}, 0, true, g.data());
  EXPECT_EQ(g[1], (51 / 255.0f - 0.2860f) / 0.3530f);
}

TEST(Preprocess, AugmentationIsSeededAndNeverFlipsASide) {
  Image image = gradient(48, 48, 3);
  ImageFormat format{16, 16, 3, {0.5f}, {0.5f}};
  const Augmentation on{true, 0.3f};
  std::vector<float> a(3 * 16 * 16), b(a.size()), c(a.size());
  preprocess(image, format, on, 42, true, a.data());
  preprocess(image, format, on, 42, true, b.data());
  EXPECT_EQ(a, b);
  int differ = 0;
  for (uint64_t seed = 1; seed < 9; ++seed) {
    preprocess(image, format, on, seed, true, c.data());
    differ += c != a;
  }
  EXPECT_GE(differ, 7);
  EXPECT_FALSE(flip_keeps_caption("a sneaker left of a coat"));
  EXPECT_FALSE(flip_keeps_caption("the dog on the Right."));
  EXPECT_TRUE(flip_keeps_caption("a photo of a leftover sandwich"));
  // A left-right gradient is never mirrored when the caption forbids it.
  Image ramp{8, 8, 1, std::vector<uint8_t>(64)};
  for (int i = 0; i < 64; ++i) ramp.pixels[i] = static_cast<uint8_t>((i % 8) * 30);
  const ImageFormat same{8, 8, 1, {0.0f}, {1.0f}};
  std::vector<float> r(64);
  for (uint64_t seed = 0; seed < 20; ++seed) {
    preprocess(ramp, same, {true, 1.0f}, seed, false, r.data());  // min_scale 1: the whole image
    EXPECT_LT(r[0], r[7]) << "seed " << seed;
  }
}

}  // namespace
}  // namespace vlm
