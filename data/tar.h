#pragma once
// The tar archives WebDataset shards are: POSIX ustar members, read one header
// at a time (a shard is never read whole), written atomically.
//
// Reading is forgiving, because large corpora ship with damaged shards: a
// header whose checksum fails is skipped by scanning forward, block by block,
// for the next valid header; a member cut short by the end of the file is
// dropped. Each such event is a TarDamage, not an exception. Only a file that
// cannot be opened or read at all throws.

#include <cstdint>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <vector>

namespace vlm {

class TarError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct TarMember {
  std::string name;     // full path inside the archive
  uint64_t offset = 0;  // of the member's data in the file
  uint64_t size = 0;    // bytes
};

struct TarDamage {
  uint64_t offset = 0;  // where in the file
  std::string what;     // "header checksum mismatch", "truncated member 000017.png", ...
};

struct TarIndex {
  std::vector<TarMember> members;  // regular files, in archive order
  std::vector<TarDamage> damage;   // empty for an intact archive
  uint64_t file_size = 0;
};

// Walks the headers of `path`, seeking over member data. Directories, links
// and global pax headers are skipped; GNU long names and pax `path` records
// name the next member.
TarIndex index_tar(const std::string& path);

// Reads members of one archive by offset (positioned reads: safe to share
// between threads).
class TarFile {
 public:
  explicit TarFile(const std::string& path);
  ~TarFile();
  TarFile(const TarFile&) = delete;
  TarFile& operator=(const TarFile&) = delete;

  // The member's bytes; a read past the end of the file is a TarError.
  std::string read(const TarMember& member) const;
  void read_at(void* out, size_t size, uint64_t offset) const;
  uint64_t size() const;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  int fd_;
};

// Writes `path` through `path`.partial, renamed into place by finish(): a
// reader never sees half a shard, and a crash leaves no shard at all.
class TarWriter {
 public:
  explicit TarWriter(std::string path);
  ~TarWriter();  // without finish(): removes the partial file
  TarWriter(const TarWriter&) = delete;
  TarWriter& operator=(const TarWriter&) = delete;

  // `name` up to 255 bytes (ustar prefix + name); members get mode 0644 and
  // mtime 0, so that the same input gives the same bytes.
  void add(const std::string& name, const std::string& data);
  void finish();  // end-of-archive blocks, fsync, rename
  uint64_t bytes_written() const { return written_; }

 private:
  void write(const void* data, size_t size);

  std::string path_, partial_;
  FILE* file_;
  uint64_t written_ = 0;
};

}  // namespace vlm
