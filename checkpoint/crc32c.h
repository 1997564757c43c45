#pragma once
// CRC-32C (Castagnoli), the checksum of checkpoint tensors. On x86-64 with
// SSE4.2 it runs on the crc32 instruction in three interleaved streams
// (about 10 GB/s per core here, against 2-4 GB/s for zlib's CRC-32); other
// CPUs use a table. crc32c("123456789") == 0xE3069283.

#include <cstddef>
#include <cstdint>

namespace vlm {

uint32_t crc32c(const void* data, size_t length);

// The CRC-32C of A followed by B, from crc32c(A), crc32c(B) and B's length:
// lets threads checksum pieces of one tensor independently.
uint32_t crc32c_combine(uint32_t crc_a, uint32_t crc_b, uint64_t length_b);

// The table version, used where SSE4.2 is missing; public for tests.
uint32_t crc32c_portable(const void* data, size_t length);

}  // namespace vlm
