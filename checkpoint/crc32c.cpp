#include "checkpoint/crc32c.h"

#include <array>
#include <cstring>

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

namespace vlm {
namespace {

// Bit-reflected: bit 31 holds the coefficient of x^0.
constexpr uint32_t kPolynomial = 0x82F63B78u;

constexpr std::array<uint32_t, 256> make_table() {
  std::array<uint32_t, 256> table{};
  for (uint32_t byte = 0; byte < 256; ++byte) {
    uint32_t crc = byte;
    for (int bit = 0; bit < 8; ++bit) crc = (crc >> 1) ^ (kPolynomial & (0u - (crc & 1u)));
    table[byte] = crc;
  }
  return table;
}
constexpr std::array<uint32_t, 256> kTable = make_table();

// a(x) * b(x) mod P(x), both reflected.
uint32_t multiply_mod_p(uint32_t a, uint32_t b) {
  uint32_t product = 0;
  for (int i = 0; i < 32; ++i) {
    if (a & (1u << (31 - i))) product ^= b;     // a's x^i term times b
    b = (b >> 1) ^ (kPolynomial & (0u - (b & 1u)));  // b *= x
  }
  return product;
}

// x^(8n) mod P(x): shifting a CRC over n zero bytes, by repeated squaring.
uint32_t x_pow_8n(uint64_t n) {
  uint32_t result = 1u << 31;  // x^0
  uint32_t power = 1u << 23;   // x^8
  for (; n != 0; n >>= 1) {
    if (n & 1) result = multiply_mod_p(result, power);
    power = multiply_mod_p(power, power);
  }
  return result;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) uint32_t extend_hardware(uint32_t state, const uint8_t* p, size_t n) {
  uint64_t s = state;
  for (; n >= 8; n -= 8, p += 8) {
    uint64_t word;
    std::memcpy(&word, p, 8);
    s = _mm_crc32_u64(s, word);
  }
  auto s32 = static_cast<uint32_t>(s);
  for (; n > 0; --n) s32 = _mm_crc32_u8(s32, *p++);
  return s32;
}

// The crc32 instruction has a latency of 3 cycles and a throughput of 1:
// three independent streams over thirds of the data keep it busy, and the
// three CRCs are then combined.
__attribute__((target("sse4.2"))) uint32_t crc32c_hardware(const uint8_t* p, size_t n) {
  constexpr size_t kMinimumForStreams = 4096;
  if (n < kMinimumForStreams) return ~extend_hardware(~0u, p, n);
  const size_t third = n / 24 * 8;
  const uint8_t* b = p + third;
  const uint8_t* c = p + 2 * third;
  uint64_t sa = ~0u, sb = ~0u, sc = ~0u;
  for (size_t i = 0; i < third; i += 8) {
    uint64_t wa, wb, wc;
    std::memcpy(&wa, p + i, 8);
    std::memcpy(&wb, b + i, 8);
    std::memcpy(&wc, c + i, 8);
    sa = _mm_crc32_u64(sa, wa);
    sb = _mm_crc32_u64(sb, wb);
    sc = _mm_crc32_u64(sc, wc);
  }
  const uint32_t crc_c = ~extend_hardware(static_cast<uint32_t>(sc), c + third, n - 3 * third);
  const uint32_t crc_ab = crc32c_combine(~static_cast<uint32_t>(sa), ~static_cast<uint32_t>(sb), third);
  return crc32c_combine(crc_ab, crc_c, n - 2 * third);
}

bool has_sse42() {
  static const bool has = (__builtin_cpu_init(), __builtin_cpu_supports("sse4.2"));
  return has;
}
#endif

}  // namespace

uint32_t crc32c_portable(const void* data, size_t length) {
  const auto* p = static_cast<const uint8_t*>(data);
  uint32_t crc = ~0u;
  for (size_t i = 0; i < length; ++i) crc = (crc >> 8) ^ kTable[(crc ^ p[i]) & 0xffu];
  return ~crc;
}

uint32_t crc32c(const void* data, size_t length) {
#if defined(__x86_64__)
  if (has_sse42()) return crc32c_hardware(static_cast<const uint8_t*>(data), length);
#endif
  return crc32c_portable(data, length);
}

uint32_t crc32c_combine(uint32_t crc_a, uint32_t crc_b, uint64_t length_b) {
  // The pre- and post-inversions of both CRCs cancel: crc(A.B) = crc(A) x^(8|B|) + crc(B) mod P.
  return multiply_mod_p(crc_a, x_pow_8n(length_b)) ^ crc_b;
}

}  // namespace vlm
