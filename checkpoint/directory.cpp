#include "checkpoint/directory.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <vector>

#include "checkpoint/durable_file.h"
#include "checkpoint/format.h"

namespace vlm {
namespace fs = std::filesystem;
namespace {

std::string this_process() {
  char host[256] = "?";
  gethostname(host, sizeof host - 1);
  const std::time_t now = std::time(nullptr);
  char when[64];
  std::strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", std::localtime(&now));
  return "pid " + std::to_string(getpid()) + " on " + host + ", since " + when;
}

void create_root(const std::string& root) {
  std::error_code error;
  fs::create_directories(root, error);
  if (error || !fs::is_directory(root)) {
    throw CheckpointError("checkpoint.dir " + root + ": cannot create the directory: " +
                          (error ? error.message() : "a file of that name exists") +
                          ". HINT: check the path and its permissions, or set checkpoint.dir to another folder");
  }
}

// Step directories of ROOT, oldest first.
std::vector<std::pair<int64_t, fs::path>> step_directories(const std::string& root) {
  std::vector<std::pair<int64_t, fs::path>> steps;
  for (const auto& entry : fs::directory_iterator(root)) {
    const int64_t step = step_of_directory_name(entry.path().filename().string());
    if (step >= 0 && entry.is_directory()) steps.emplace_back(step, entry.path());
  }
  std::sort(steps.begin(), steps.end());
  return steps;
}

}  // namespace

CheckpointDirectoryLock::CheckpointDirectoryLock(const std::string& root) {
  create_root(root);
  const std::string path = root + "/.lock";
  fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0) throw CheckpointError(path + ": cannot open: " + std::strerror(errno));
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    std::ifstream in(path);
    const std::string holder((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    ::close(fd_);
    fd_ = -1;
    throw CheckpointFolderInUse("checkpoint.dir " + root + " is in use by another job (" +
                          (holder.empty() ? std::string("unknown") : holder) +
                          "): two jobs writing one folder would mix their checkpoints. HINT: wait for it to end, "
                          "or set checkpoint.dir to another folder");
  }
  const std::string me = this_process();
  if (::ftruncate(fd_, 0) != 0 || ::pwrite(fd_, me.data(), me.size(), 0) != static_cast<ssize_t>(me.size())) {
    // The lock is held; only the note for a second job is missing.
  }
}

CheckpointDirectoryLock::~CheckpointDirectoryLock() {
  if (fd_ >= 0) ::close(fd_);  // releases the lock
}

void check_writable(const std::string& root) {
  create_root(root);
  char name[64];
  std::snprintf(name, sizeof name, "/.writable-%d", static_cast<int>(getpid()));
  const std::string probe = root + name;
  try {
    write_file_durably(probe, "vlmtrain checks that checkpoint.dir is writable\n");
  } catch (const CheckpointError& e) {
    throw CheckpointError(std::string("checkpoint.dir is not writable: ") + e.what() +
                          ". HINT: fix its permissions or free space, or set checkpoint.dir to another folder");
  }
  fs::remove(probe);
}

namespace {

// Complete step directories (with a manifest) of ROOT past `resume_step`, oldest first.
std::vector<fs::path> complete_checkpoints_after(const std::string& root, int64_t resume_step) {
  std::vector<fs::path> later;
  for (const auto& [step, path] : step_directories(root)) {
    if (step > resume_step && fs::exists(path / "manifest.pb")) later.push_back(path);
  }
  return later;
}

}  // namespace

void check_checkpoint_root(const std::string& root, int64_t resume_step, bool overwrite) {
  create_root(root);
  const std::vector<fs::path> in_the_way = complete_checkpoints_after(root, resume_step);
  if (in_the_way.empty() || overwrite) return;
  std::string names;
  for (const fs::path& p : in_the_way) names += (names.empty() ? "" : ", ") + p.filename().string();
  throw CheckpointError(
      "checkpoint.dir " + root + " holds " + names +
      (resume_step < 0 ? ", but this run starts fresh: its checkpoints would mix with another run's"
                       : ", later than the step " + std::to_string(resume_step) +
                             " this run resumes from: this run's checkpoints would collide with them") +
      ". HINT: --resume latest to continue that run, set checkpoint.dir to a new folder, or --set "
      "checkpoint.overwrite=true to delete them");
}

void clear_checkpoint_root(const std::string& root, int64_t resume_step) {
  const bool any_complete = !complete_checkpoints_after(root, resume_step).empty();
  if (any_complete) {
    // `best` and `latest` first, so that neither ever names a deleted checkpoint.
    int64_t best_step = -1;
    try {
      best_step = step_of_directory_name(read_pointer(root, "best"));
    } catch (const CheckpointError&) {
      best_step = resume_step + 1;  // damaged: it goes too
    }
    if (best_step > resume_step) {
      fs::remove(root + "/best");
      fsync_directory(root);
    }
    std::string keep_latest;
    for (const auto& [step, path] : step_directories(root)) {
      if (step <= resume_step && fs::exists(path / "manifest.pb")) keep_latest = path.filename().string();
    }
    if (keep_latest.empty()) {
      fs::remove(root + "/latest");
      fsync_directory(root);
    } else {
      write_file_durably(root + "/latest", encode_latest(keep_latest));
    }
  }
  for (const auto& [step, path] : step_directories(root)) {
    if (step > resume_step) fs::remove_all(path);  // unfinished saves (no manifest) too: in the way
  }
}

std::string recover_latest(const std::string& root) {
  if (!fs::is_directory(root)) return "";
  const std::string named = read_latest(root);
  const std::vector<fs::path> later = complete_checkpoints_after(root, named.empty() ? -1 : step_of_directory_name(named));
  if (later.empty()) return "";
  // Without `latest` (the first save was cut short), only a folder of one run's checkpoints is recovered.
  const std::optional<uint64_t> lineage = lineage_of(named.empty() ? later.front().string() : root + "/" + named);
  if (!lineage) return "";  // the resume reports a damaged checkpoint
  std::string newest;
  for (const fs::path& path : later) {
    if (lineage_of(path.string()) != lineage) {
      if (named.empty()) return "";
      continue;
    }
    newest = path.filename().string();
  }
  if (!newest.empty()) write_file_durably(root + "/latest", encode_latest(newest));
  return newest;
}

}  // namespace vlm
