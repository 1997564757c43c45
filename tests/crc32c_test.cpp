#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "checkpoint/crc32c.h"

namespace vlm {
namespace {

// The bit-at-a-time definition, independent of both implementations.
uint32_t crc32c_by_definition(const uint8_t* p, size_t n) {
  uint32_t crc = ~0u;
  for (size_t i = 0; i < n; ++i) {
    crc ^= p[i];
    for (int bit = 0; bit < 8; ++bit) crc = (crc >> 1) ^ (0x82F63B78u & (0u - (crc & 1u)));
  }
  return ~crc;
}

std::vector<uint8_t> random_bytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> bytes(n);
  for (auto& b : bytes) b = static_cast<uint8_t>(rng());
  return bytes;
}

TEST(Crc32c, KnownVectors) {
  const std::string check = "123456789";
  EXPECT_EQ(crc32c(check.data(), check.size()), 0xE3069283u);
  EXPECT_EQ(crc32c_portable(check.data(), check.size()), 0xE3069283u);
  EXPECT_EQ(crc32c(nullptr, 0), 0u);
  const std::vector<uint8_t> zeros(32, 0);  // RFC 3720, B.4
  EXPECT_EQ(crc32c(zeros.data(), zeros.size()), 0x8A9136AAu);
}

TEST(Crc32c, MatchesTheDefinitionAtEveryLengthAndAlignment) {
  const auto bytes = random_bytes(20000, 1);
  // Lengths around the three-stream threshold and its rounding, at odd offsets.
  for (size_t length : {0, 1, 7, 8, 23, 24, 25, 4095, 4096, 4097, 4111, 12345, 19990}) {
    for (size_t offset : {0, 1, 3, 7}) {
      const uint8_t* p = bytes.data() + offset;
      const uint32_t expected = crc32c_by_definition(p, length);
      EXPECT_EQ(crc32c(p, length), expected) << "length " << length << " offset " << offset;
      EXPECT_EQ(crc32c_portable(p, length), expected) << "length " << length << " offset " << offset;
    }
  }
}

TEST(Crc32c, CombineEqualsTheWholeAtEverySplit) {
  const auto bytes = random_bytes(5000, 2);
  const uint32_t whole = crc32c(bytes.data(), bytes.size());
  for (size_t split : {0, 1, 8, 999, 4096, 4999, 5000}) {
    const uint32_t a = crc32c(bytes.data(), split);
    const uint32_t b = crc32c(bytes.data() + split, bytes.size() - split);
    EXPECT_EQ(crc32c_combine(a, b, bytes.size() - split), whole) << "split " << split;
  }
}

TEST(Crc32c, DetectsEveryFlippedBit) {
  auto bytes = random_bytes(8192, 3);
  const uint32_t clean = crc32c(bytes.data(), bytes.size());
  for (size_t bit = 0; bit < bytes.size() * 8; ++bit) {
    bytes[bit / 8] ^= static_cast<uint8_t>(1u << (bit % 8));
    EXPECT_NE(crc32c(bytes.data(), bytes.size()), clean) << "bit " << bit;
    bytes[bit / 8] ^= static_cast<uint8_t>(1u << (bit % 8));
  }
}

}  // namespace
}  // namespace vlm
