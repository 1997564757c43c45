#include "checkpoint/format.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <regex>

#include "checkpoint/crc32c.h"

namespace vlm {
namespace fs = std::filesystem;
namespace {

constexpr char kManifestMagic[8] = {'V', 'L', 'M', 'M', 'A', 'N', 'I', 'F'};
constexpr size_t kManifestHeader = 24;  // magic, version, CRC-32C, length
constexpr uint64_t kMaxManifestBytes = 256ull << 20;

void put_le(std::string& out, uint64_t value, int bytes) {
  for (int i = 0; i < bytes; ++i) out += static_cast<char>((value >> (8 * i)) & 0xff);
}

uint64_t get_le(const std::string& in, size_t at, int bytes) {
  uint64_t value = 0;
  for (int i = 0; i < bytes; ++i) value |= static_cast<uint64_t>(static_cast<uint8_t>(in[at + i])) << (8 * i);
  return value;
}

// The manifest's checksum covers its version and length fields too, so that a
// flipped version bit reads as damage, not as a newer format.
uint32_t manifest_crc(const std::string& version_field, const std::string& length_field, const char* message,
                      uint64_t length) {
  uint32_t crc = crc32c(version_field.data(), 4);
  crc = crc32c_combine(crc, crc32c(length_field.data(), 8), 8);
  return crc32c_combine(crc, crc32c(message, length), length);
}

// Bits in which the first 8 bytes differ from the magic: 0 is a version-3
// header, 1 a damaged one (a version-2 manifest starts with 0x08, far away).
int magic_distance(const std::string& bytes) {
  if (bytes.size() < sizeof kManifestMagic) return 64;
  int bits = 0;
  for (size_t i = 0; i < sizeof kManifestMagic; ++i) bits += __builtin_popcount(static_cast<uint8_t>(bytes[i] ^ kManifestMagic[i]));
  return bits;
}

std::string hex(uint32_t value) {
  char text[9];
  std::snprintf(text, sizeof text, "%08x", value);
  return text;
}

std::string read_file(const std::string& path, uint64_t limit) {
  std::error_code error;
  const uint64_t size = fs::file_size(path, error);
  if (error) throw CheckpointError(path + ": cannot read: " + error.message());
  if (size > limit) throw CheckpointError(path + ": " + std::to_string(size) + " bytes is implausibly large");
  std::ifstream in(path, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (!in.good() && !in.eof()) throw CheckpointError(path + ": read failed");
  return bytes;
}

}  // namespace

std::string step_directory_name(int64_t step) {
  char name[32];
  std::snprintf(name, sizeof name, "step-%08lld", static_cast<long long>(step));
  return name;
}

int64_t step_of_directory_name(const std::string& name) {
  static const std::regex kStep(R"(step-(\d{8}))");
  std::smatch m;
  return std::regex_match(name, m, kStep) ? std::stoll(m[1]) : -1;
}

std::string encode_manifest(const Manifest& manifest, int format_version) {
  std::string message;
  if (!manifest.SerializeToString(&message)) throw CheckpointError("cannot serialize the manifest");
  std::string version, length;
  put_le(version, static_cast<uint32_t>(format_version), 4);
  put_le(length, message.size(), 8);
  std::string out(kManifestMagic, sizeof kManifestMagic);
  out += version;
  put_le(out, manifest_crc(version, length, message.data(), message.size()), 4);
  out += length;
  return out + message;
}

Manifest decode_manifest(const std::string& bytes, const std::string& path) {
  Manifest manifest;
  if (bytes.empty()) throw CheckpointError(path + ": empty (0 bytes): the file is damaged or was cut short");
  const int distance = magic_distance(bytes);
  if (distance == 0) {
    if (bytes.size() < kManifestHeader) throw CheckpointError(path + ": truncated manifest header");
    const uint64_t version = get_le(bytes, 8, 4), crc = get_le(bytes, 12, 4), length = get_le(bytes, 16, 8);
    if (length != bytes.size() - kManifestHeader) {
      throw CheckpointError(path + ": damaged or truncated manifest: the header says " + std::to_string(length) +
                            " bytes follow, the file holds " + std::to_string(bytes.size() - kManifestHeader));
    }
    if (manifest_crc(bytes.substr(8, 4), bytes.substr(16, 8), bytes.data() + kManifestHeader, length) != crc) {
      throw CheckpointError(path + ": damaged manifest: its checksum does not match");
    }
    if (version > static_cast<uint64_t>(kCheckpointFormatVersion)) {  // intact, and written by a newer vlmtrain
      throw CheckpointError(path + ": format version " + std::to_string(version) + " is newer than this vlmtrain reads (" +
                            std::to_string(kCheckpointFormatVersion) + "). HINT: use a newer vlmtrain");
    }
    if (version < 3) {  // the header came with version 3
      throw CheckpointError(path + ": not a valid manifest (format version " + std::to_string(version) +
                            " in a version-3 header)");
    }
    if (!manifest.ParseFromArray(bytes.data() + kManifestHeader, static_cast<int>(length)) ||
        manifest.format_version() != static_cast<int>(version)) {
      throw CheckpointError(path + ": not a valid manifest (its checksum matches, its contents do not parse)");
    }
    return manifest;
  }
  if (distance <= 2) throw CheckpointError(path + ": damaged manifest header (its magic bytes are wrong)");
  // Version 2: the bare message, without a checksum of its own.
  if (!manifest.ParseFromString(bytes)) throw CheckpointError(path + ": not a valid manifest (corrupt or truncated)");
  if (manifest.format_version() < kOldestReadableFormatVersion) {
    throw CheckpointError(path + ": format version " + std::to_string(manifest.format_version()) +
                          " predates CRC-32C checksums and this vlmtrain cannot verify it. HINT: train again, or "
                          "resume it with the pre-release build that wrote it");
  }
  if (manifest.format_version() != 2) {
    throw CheckpointError(path + ": not a valid manifest (format version " + std::to_string(manifest.format_version()) +
                          " without a version-3 header)");
  }
  return manifest;
}

std::string encode_latest(const std::string& name) { return name + " " + hex(crc32c(name.data(), name.size())) + "\n"; }

std::string decode_latest(const std::string& bytes, const std::string& path) {
  static const std::regex kVersion3(R"((step-\d{8}) ([0-9a-f]{8})\n)");
  static const std::regex kVersion2(R"((step-\d{8})\n)");
  std::smatch m;
  if (std::regex_match(bytes, m, kVersion3)) {
    const std::string name = m[1];
    if (hex(crc32c(name.data(), name.size())) != m[2].str()) {
      throw CheckpointError(path + ": damaged: the name it holds does not match its checksum. HINT: pass --resume "
                                   "ROOT/step-NNNNNNNN (a step directory that `vlm-ckpt verify` accepts)");
    }
    return name;
  }
  if (std::regex_match(bytes, m, kVersion2)) return m[1];
  throw CheckpointError(path + ": damaged or not a checkpoint pointer (expected 'step-NNNNNNNN <checksum>'). HINT: pass "
                               "--resume ROOT/step-NNNNNNNN (a step directory that `vlm-ckpt verify` accepts)");
}

std::string read_pointer(const std::string& root, const std::string& pointer) {
  const std::string path = (root.empty() ? std::string(".") : root) + "/" + pointer;
  if (!fs::exists(path)) return "";
  return decode_latest(read_file(path, 4096), path);
}

void check_output_outside(const std::string& output, const std::string& source, const std::string& flag) {
  std::error_code error;
  const fs::path out = fs::weakly_canonical(output, error);
  fs::path kept = fs::weakly_canonical(source, error);
  if (error || out.empty() || kept.empty()) return;  // the read reports a bad source
  if (fs::is_regular_file(kept)) {
    const std::string name = kept.filename().string();
    if (name == "latest" || name == "best") kept = kept.parent_path();  // a pointer: its root
  } else if (fs::is_regular_file(kept / "manifest.pb") && fs::exists(kept.parent_path() / "latest")) {
    kept = kept.parent_path();  // a step directory: its root, with every other step
  }
  if (std::mismatch(kept.begin(), kept.end(), out.begin(), out.end()).first == kept.end()) {  // kept is a prefix of out
    throw CheckpointError(flag + " " + output + " is inside " + kept.string() + ", which holds the model " + source +
                          " that is read: writing there could damage it. HINT: write the output somewhere else");
  }
}

std::optional<uint64_t> lineage_of(const std::string& step_directory) {
  try {
    const std::string path = step_directory + "/manifest.pb";
    std::ifstream in(path, std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    return decode_manifest(bytes, path).lineage_id();
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

std::string resolve_checkpoint(const std::string& root, const std::string& which) {
  if (which == "latest" || which == "best") {
    const std::string folder = root.empty() ? "." : root;
    const std::string name = read_pointer(folder, which);
    if (name.empty()) {
      throw CheckpointError(folder + "/" + which + ": no checkpoint there. HINT: check checkpoint.dir, or pass a step "
                                     "directory (ROOT/step-NNNNNNNN)" +
                            (which == "best" ? "; ROOT/best is written by validation (eval.every_steps)" : ""));
    }
    return folder + "/" + name;
  }
  const fs::path path(which);
  if ((path.filename() == "latest" || path.filename() == "best") && fs::is_regular_file(path)) {
    return (path.parent_path() / read_pointer(path.parent_path().string(), path.filename().string())).string();
  }
  if (fs::is_directory(path) && fs::exists(path / "latest")) return (path / read_latest(which)).string();
  return which;
}

}  // namespace vlm
