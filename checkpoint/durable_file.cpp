#include "checkpoint/durable_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "checkpoint/format.h"

namespace vlm {
namespace {

[[noreturn]] void fail(const std::string& path, const char* call) {
  const int error = errno;
  throw CheckpointError(path + ": " + call + " failed: " + std::strerror(error) + " (errno " + std::to_string(error) + ")");
}

}  // namespace

DurableFile::DurableFile(std::string path) : path_(std::move(path)), tmp_(path_ + ".tmp") {
  fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) fail(tmp_, "open");
}

DurableFile::~DurableFile() {
  if (fd_ < 0) return;  // committed
  ::close(fd_);
  ::unlink(tmp_.c_str());
}

void DurableFile::append(const void* data, uint64_t bytes) {
  const char* next = static_cast<const char*>(data);
  while (bytes > 0) {
    const ssize_t written = ::write(fd_, next, bytes);
    if (written < 0 && errno == EINTR) continue;
    if (written <= 0) fail(tmp_, "write");
    next += written;
    bytes -= static_cast<uint64_t>(written);
    size_ += static_cast<uint64_t>(written);
  }
}

void DurableFile::commit() {
  if (::fsync(fd_) != 0) fail(tmp_, "fsync");
  const int fd = std::exchange(fd_, -1);
  if (::close(fd) != 0) {
    const int error = errno;
    ::unlink(tmp_.c_str());
    errno = error;
    fail(tmp_, "close");
  }
  if (::rename(tmp_.c_str(), path_.c_str()) != 0) {
    const int error = errno;
    ::unlink(tmp_.c_str());
    errno = error;
    fail(path_, "rename");
  }
  renamed_ = true;
  fsync_directory(std::filesystem::path(path_).parent_path().string());
}

void write_file_durably(const std::string& path, const std::string& bytes) {
  DurableFile file(path);
  file.append(bytes.data(), bytes.size());
  file.commit();
}

void fsync_directory(const std::string& directory) {
  const std::string dir = directory.empty() ? "." : directory;
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) fail(dir, "open");
  if (::fsync(fd) != 0) {
    const int error = errno;
    ::close(fd);
    errno = error;
    fail(dir, "fsync");
  }
  ::close(fd);
}

}  // namespace vlm
