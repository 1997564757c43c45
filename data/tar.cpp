#include "data/tar.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace vlm {
namespace {

constexpr uint64_t kBlock = 512;

// The ustar header: offsets and lengths of the fields we use.
struct Field {
  size_t offset, length;
};
constexpr Field kName{0, 100}, kMode{100, 8}, kSize{124, 12}, kMtime{136, 12}, kChecksum{148, 8},
    kType{156, 1}, kMagic{257, 6}, kVersion{263, 2}, kPrefix{345, 155};

uint64_t round_up(uint64_t n) { return (n + kBlock - 1) / kBlock * kBlock; }

std::string text_field(const char* header, Field f) {
  const char* begin = header + f.offset;
  return std::string(begin, strnlen(begin, f.length));
}

// Octal, space- or NUL-terminated; or GNU base-256 when the top bit is set.
bool number_field(const char* header, Field f, uint64_t* out) {
  const auto* p = reinterpret_cast<const unsigned char*>(header + f.offset);
  uint64_t value = 0;
  if (p[0] & 0x80) {
    for (size_t i = 1; i < f.length; ++i) value = value << 8 | p[i];
    *out = value;
    return true;
  }
  size_t i = 0;
  while (i < f.length && p[i] == ' ') ++i;
  bool digits = false;
  for (; i < f.length && p[i] >= '0' && p[i] <= '7'; ++i, digits = true) value = value * 8 + (p[i] - '0');
  *out = value;
  return digits && (i == f.length || p[i] == ' ' || p[i] == '\0');
}

bool is_zero_block(const char* block) {
  return std::all_of(block, block + kBlock, [](char c) { return c == 0; });
}

// Sum of the header's bytes with the checksum field read as spaces; old tars
// summed signed chars, so either sum is accepted.
bool checksum_ok(const char* header) {
  uint64_t stored = 0;
  if (!number_field(header, kChecksum, &stored)) return false;
  int64_t unsigned_sum = 0, signed_sum = 0;
  for (size_t i = 0; i < kBlock; ++i) {
    const bool in_field = i >= kChecksum.offset && i < kChecksum.offset + kChecksum.length;
    unsigned_sum += in_field ? ' ' : static_cast<unsigned char>(header[i]);
    signed_sum += in_field ? ' ' : static_cast<signed char>(header[i]);
  }
  return static_cast<int64_t>(stored) == unsigned_sum || static_cast<int64_t>(stored) == signed_sum;
}

void put_octal(char* header, Field f, uint64_t value) {
  // length-1 digits, zero-padded, then NUL.
  for (size_t i = f.length - 1; i-- > 0; value >>= 3) header[f.offset + i] = static_cast<char>('0' + (value & 7));
  header[f.offset + f.length - 1] = '\0';
}

// `path` of a pax extended header's "len key=value\n" records, or empty.
std::string pax_path(const std::string& records) {
  size_t pos = 0;
  while (pos < records.size()) {
    const size_t space = records.find(' ', pos);
    if (space == std::string::npos) break;
    const size_t length = std::strtoull(records.c_str() + pos, nullptr, 10);
    if (length == 0 || pos + length > records.size()) break;
    const std::string record = records.substr(space + 1, pos + length - space - 2);  // without '\n'
    if (record.rfind("path=", 0) == 0) return record.substr(5);
    pos += length;
  }
  return {};
}

std::string system_error(const std::string& what, const std::string& path) {
  return path + ": " + what + ": " + std::strerror(errno);
}

void read_exactly(int fd, const std::string& path, void* out, size_t size, uint64_t offset) {
  size_t done = 0;
  while (done < size) {
    const ssize_t got = ::pread(fd, static_cast<char*>(out) + done, size - done, static_cast<off_t>(offset + done));
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) throw TarError(system_error("read failed at offset " + std::to_string(offset + done), path));
    if (got == 0) {
      throw TarError(path + ": ends at offset " + std::to_string(offset + done) + " but " + std::to_string(size) +
                     " bytes were expected from offset " + std::to_string(offset) + " (truncated file?)");
    }
    done += static_cast<size_t>(got);
  }
}

}  // namespace

TarFile::TarFile(const std::string& path) : path_(path), fd_(::open(path.c_str(), O_RDONLY | O_CLOEXEC)) {
  if (fd_ < 0) throw TarError(system_error("cannot open", path));
}

TarFile::~TarFile() { ::close(fd_); }

uint64_t TarFile::size() const {
  struct stat st {};
  if (::fstat(fd_, &st) != 0) throw TarError(system_error("cannot stat", path_));
  return static_cast<uint64_t>(st.st_size);
}

void TarFile::read_at(void* out, size_t size, uint64_t offset) const { read_exactly(fd_, path_, out, size, offset); }

std::string TarFile::read(const TarMember& member) const {
  std::string bytes(member.size, '\0');
  read_at(bytes.data(), bytes.size(), member.offset);
  return bytes;
}

TarIndex index_tar(const std::string& path) {
  const TarFile file(path);
  TarIndex index;
  index.file_size = file.size();

  char header[kBlock];
  std::string next_name;  // from a GNU long-name or pax header
  uint64_t offset = 0;
  uint64_t damaged_from = UINT64_MAX;  // start of a run of blocks skipped while resynchronising
  auto end_skip = [&](uint64_t at) {
    if (damaged_from == UINT64_MAX) return;
    index.damage.push_back({damaged_from, "damaged header: skipped " + std::to_string(at - damaged_from) +
                                              " bytes to the next valid header"});
    damaged_from = UINT64_MAX;
  };
  while (true) {
    if (offset + kBlock > index.file_size) {
      if (damaged_from == UINT64_MAX) index.damage.push_back({offset, "no end-of-archive marker: the file is truncated"});
      end_skip(offset);
      break;
    }
    file.read_at(header, kBlock, offset);
    if (is_zero_block(header) && damaged_from == UINT64_MAX) break;  // end of archive
    // While resynchronising, only a ustar header counts: member data could pass the checksum test by chance.
    const bool ustar = std::memcmp(header + kMagic.offset, "ustar", 5) == 0;
    if (!checksum_ok(header) || (damaged_from != UINT64_MAX && !ustar)) {
      if (damaged_from == UINT64_MAX) damaged_from = offset;
      next_name.clear();
      offset += kBlock;
      continue;
    }
    end_skip(offset);
    uint64_t size = 0;
    number_field(header, kSize, &size);
    const char type = header[kType.offset];
    const uint64_t data = offset + kBlock;
    if (data + size > index.file_size) {
      index.damage.push_back({offset, "truncated member " + text_field(header, kName) + ": " + std::to_string(size) +
                                          " bytes declared, " + std::to_string(index.file_size - data) + " present"});
      break;
    }
    if (type == 'L' || type == 'x') {  // names the next member
      std::string payload(size, '\0');
      file.read_at(payload.data(), size, data);
      next_name = type == 'L' ? std::string(payload.c_str()) : pax_path(payload);
    } else if (type == '0' || type == '\0' || type == '7') {  // regular file
      std::string name = text_field(header, kName);
      const std::string prefix = text_field(header, kPrefix);
      if (ustar && !prefix.empty()) name = prefix + "/" + name;
      if (!next_name.empty()) name = std::move(next_name);
      index.members.push_back({std::move(name), data, size});
      next_name.clear();
    } else {
      next_name.clear();  // directory, link, global pax header, ...: no data we read
    }
    offset = data + round_up(size);
  }
  return index;
}

TarWriter::TarWriter(std::string path)
    : path_(std::move(path)), partial_(path_ + ".partial"), file_(std::fopen(partial_.c_str(), "wb")) {
  if (file_ == nullptr) throw TarError(system_error("cannot create", partial_));
}

TarWriter::~TarWriter() {
  if (file_ == nullptr) return;
  std::fclose(file_);
  std::remove(partial_.c_str());
}

void TarWriter::write(const void* data, size_t size) {
  if (size != 0 && std::fwrite(data, 1, size, file_) != size) throw TarError(system_error("write failed", partial_));
  written_ += size;
}

void TarWriter::add(const std::string& name, const std::string& data) {
  char header[kBlock] = {};
  if (name.size() <= kName.length) {
    std::memcpy(header + kName.offset, name.data(), name.size());
  } else {
    // ustar splits a long path at a '/' into prefix (155) and name (100).
    const size_t cut = name.rfind('/', kPrefix.length);
    if (name.size() > kName.length + kPrefix.length + 1 || cut == std::string::npos || cut == 0 ||
        name.size() - cut - 1 > kName.length) {
      throw TarError(path_ + ": member name '" + name + "' does not fit a ustar header (at most 100 bytes, or 255 "
                     "split at a '/'); use shorter keys");
    }
    std::memcpy(header + kPrefix.offset, name.data(), cut);
    std::memcpy(header + kName.offset, name.data() + cut + 1, name.size() - cut - 1);
  }
  put_octal(header, kMode, 0644);
  put_octal(header, {108, 8}, 0);  // uid
  put_octal(header, {116, 8}, 0);  // gid
  put_octal(header, kSize, data.size());
  put_octal(header, kMtime, 0);
  header[kType.offset] = '0';
  std::memcpy(header + kMagic.offset, "ustar", 6);
  std::memcpy(header + kVersion.offset, "00", 2);
  std::memset(header + kChecksum.offset, ' ', kChecksum.length);
  uint64_t sum = 0;
  for (char c : header) sum += static_cast<unsigned char>(c);
  put_octal(header, {kChecksum.offset, 7}, sum);  // six digits, NUL, then the space already there
  write(header, kBlock);
  write(data.data(), data.size());
  static const char kZeros[kBlock] = {};
  write(kZeros, round_up(data.size()) - data.size());
}

void TarWriter::finish() {
  static const char kZeros[2 * kBlock] = {};
  write(kZeros, sizeof kZeros);
  if (std::fflush(file_) != 0 || ::fsync(::fileno(file_)) != 0) throw TarError(system_error("flush failed", partial_));
  std::fclose(file_);
  file_ = nullptr;
  if (std::rename(partial_.c_str(), path_.c_str()) != 0) throw TarError(system_error("cannot rename into place", path_));
}

}  // namespace vlm
