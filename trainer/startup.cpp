#include "trainer/startup.h"

#include <glog/logging.h>
#include <google/protobuf/text_format.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "checkpoint/crc32c.h"
#include "checkpoint/reader.h"
#include "comm/byte_collectives.h"
#include "proto/config_loader.h"

namespace vlm {
namespace {

// The step a run resumes from, or -1 for a fresh run.
int64_t resume_step(const std::string& resume_from) {
  return resume_from.empty() ? -1 : CheckpointReader(resume_from).manifest().step();
}

// The running executable's CRC-32C: ranks of one job must run the same build.
uint32_t executable_checksum() {
  std::ifstream in("/proc/self/exe", std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return crc32c(bytes.data(), bytes.size());
}

}  // namespace

std::string run_directory(const TrainConfig& config) {
  if (!config.run().dir().empty()) return config.run().dir();
  if (const char* from_launcher = std::getenv("VLM_RUN_DIR"); from_launcher != nullptr && *from_launcher != '\0') {
    return from_launcher;
  }
  return config.checkpoint().dir().empty() ? "." : config.checkpoint().dir();
}

void create_run_directory(const TrainConfig& config) {
  const std::string dir = run_directory(config);
  std::error_code error;
  std::filesystem::create_directories(dir, error);
  if (!error && std::filesystem::is_directory(dir)) return;
  const std::string from = !config.run().dir().empty() ? "run.dir"
                           : std::getenv("VLM_RUN_DIR") != nullptr && *std::getenv("VLM_RUN_DIR") != '\0'
                               ? "VLM_RUN_DIR (vlm-launch --run-dir)"
                               : "checkpoint.dir";
  throw ConfigError(from + " " + dir + ": cannot create the directory: " +
                    (error ? error.message() : "a file of that name exists") +
                    ". HINT: check the path and its permissions, or set " +
                    (from == "checkpoint.dir" ? "checkpoint.dir or " : "") + "run.dir to another folder");
}

std::string resolve_resume(const TrainConfig& config, const std::string& resume) {
  if (resume != "auto") return resume;
  const std::string& root = config.checkpoint().dir();
  return !root.empty() && std::filesystem::exists(std::filesystem::path(root) / "latest") ? "latest" : "";
}

std::string resolve_init_from(const TrainConfig& config, const std::string& init_from, const std::string& resume) {
  if (init_from.empty() || !resume.empty()) return "";
  const std::string path = resolve_checkpoint("", init_from);
  const std::string& root = config.checkpoint().dir();
  if (config.checkpoint().overwrite() && !root.empty() && std::filesystem::exists(root) && std::filesystem::exists(path)) {
    const std::string folder = std::filesystem::canonical(root).string() + "/";
    if (std::filesystem::canonical(path).string().rfind(folder, 0) == 0) {
      throw std::invalid_argument("--init-from " + init_from + " is inside checkpoint.dir " + root +
                                  ", which checkpoint.overwrite=true empties before training. HINT: export it first "
                                  "(vlm-ckpt export " + init_from + " model.vlm) or write to another checkpoint.dir");
    }
  }
  return path;
}

void check_same_config(Backend& control, const TrainConfig& config, const std::string& resume,
                       const std::string& init_from, Millis timeout) {
  char executable[16];
  std::snprintf(executable, sizeof executable, "%08x", executable_checksum());
  // One line each for the executable and the two flags, then the config.
  const std::string mine = std::string(executable) + "\n" + resume + "\n" + init_from + "\n" + resolved_config_text(config);
  const std::vector<std::string> all = allgather_bytes(control, std::to_string(crc32c(mine.data(), mine.size())), timeout);
  if (std::all_of(all.begin(), all.end(), [&](const std::string& h) { return h == all.front(); })) return;
  // Some rank differs: everyone compares with rank 0 and rank 0's view is the message.
  const std::string root = broadcast_bytes(control, mine, 0, timeout);
  const auto lines = [](const std::string& s) {
    const size_t a = s.find('\n'), b = s.find('\n', a + 1), c = s.find('\n', b + 1);
    return std::array<std::string, 4>{s.substr(0, a), s.substr(a + 1, b - a - 1), s.substr(b + 1, c - b - 1), s.substr(c + 1)};
  };
  const auto theirs = lines(root), ours = lines(mine);
  const auto shown = [](const std::string& flag) { return flag.empty() ? std::string("(none)") : flag; };
  std::string difference;
  if (theirs[0] != ours[0]) {
    difference = "runs another vlm-train executable (CRC-32C " + ours[0] + " vs rank 0's " + theirs[0] + ")";
  } else if (theirs[1] != ours[1]) {
    difference = "differs from rank 0 in --resume: " + shown(theirs[1]) + " vs " + shown(ours[1]) + " (rank 0 vs this rank)";
  } else if (theirs[2] != ours[2]) {
    difference = "differs from rank 0 in --init-from: " + shown(theirs[2]) + " vs " + shown(ours[2]) + " (rank 0 vs this rank)";
  } else {
    TrainConfig root_config;
    google::protobuf::TextFormat::ParseFromString(theirs[3], &root_config);
    difference = first_difference(root_config, config);
    if (!difference.empty()) difference = "differs from rank 0 in " + difference + " (rank 0 vs this rank)";
  }
  const std::vector<std::string> differences = allgather_bytes(control, difference, timeout);
  std::string ranks, details;
  for (size_t r = 0; r < differences.size(); ++r) {
    if (differences[r].empty()) continue;
    ranks += (ranks.empty() ? "" : ", ") + std::to_string(control.members()[r]);
    details += "\n  rank " + std::to_string(control.members()[r]) + " " + differences[r];
  }
  throw ConfigError("the ranks were started with different configs: ranks {" + ranks + "} differ from rank 0:" +
                    details + "\nHINT: start every rank with the same --config, --set, --resume and --init-from arguments (and the same build)");
}

std::unique_ptr<CheckpointDirectoryLock> lock_checkpoint_folder(const TrainConfig& config, const Topology& topology) {
  const std::string& root = config.checkpoint().dir();
  return root.empty() || !topology.is_root() ? nullptr : std::make_unique<CheckpointDirectoryLock>(root);
}

std::string agree_on_resume(Backend& control, const TrainConfig& config, const std::string& resume, Millis timeout) {
  std::string from;
  if (control.rank() == 0) {
    const std::string& root = config.checkpoint().dir();
    if ((resume == "auto" || resume == "latest") && !root.empty()) {
      const std::string recovered = recover_latest(root);
      LOG_IF(WARNING, !recovered.empty())
          << "checkpoint.dir " << root << ": " << recovered << " is complete, but a save cut short did not name it "
          << "in `latest`; `latest` names it now, and this run resumes from it";
    }
    const std::string which = resolve_resume(config, resume);
    if (!which.empty()) from = resolve_checkpoint(root, which);
  }
  return broadcast_bytes(control, from, 0, timeout);
}

void check_checkpoint_folder(const TrainConfig& config, const Topology& topology, const std::string& resume_from) {
  const std::string& root = config.checkpoint().dir();
  if (root.empty()) return;
  if (topology.is_root()) check_checkpoint_root(root, resume_step(resume_from), config.checkpoint().overwrite());
  if (topology.dp_rank() == 0) check_writable(root);  // the ranks that write shards
}

void clear_checkpoint_folder(Backend& control, const TrainConfig& config, const std::string& resume_from,
                             Millis timeout) {
  const std::string& root = config.checkpoint().dir();
  if (root.empty()) return;
  if (control.rank() == 0) clear_checkpoint_root(root, resume_step(resume_from));
  control.barrier({timeout})->wait();  // no rank writes a step directory before it is cleared
}

}  // namespace vlm
