#pragma once
// Note [Durable files]: the one way a checkpoint file (shard, manifest,
// latest, exported model) reaches the disk. The bytes go to PATH.tmp; commit()
// fsyncs it, checks its close, renames it to PATH and fsyncs the directory.
// Only then does PATH exist, complete: a crash or an error at any point
// leaves PATH as it was (absent, or the previous version) and the temporary
// file is removed. Every failure names the path, the call and errno's message
// ("No space left on device").

#include <cstdint>
#include <string>

namespace vlm {

class DurableFile {
 public:
  explicit DurableFile(std::string path);
  ~DurableFile();  // an uncommitted file is removed
  DurableFile(const DurableFile&) = delete;
  DurableFile& operator=(const DurableFile&) = delete;

  void append(const void* data, uint64_t bytes);
  uint64_t size() const { return size_; }
  void commit();
  const std::string& path() const { return path_; }
  // Whether PATH was replaced: after a failed commit(), true when only the
  // directory's fsync failed (PATH holds the new bytes, perhaps not durably).
  bool renamed() const { return renamed_; }

 private:
  std::string path_, tmp_;
  int fd_ = -1;
  uint64_t size_ = 0;
  bool renamed_ = false;
};

// PATH replaced by `bytes`, durably and atomically.
void write_file_durably(const std::string& path, const std::string& bytes);
// Makes the names in `directory` (new or renamed files) durable.
void fsync_directory(const std::string& directory);

}  // namespace vlm
