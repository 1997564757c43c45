#include "trainer/startup.h"

#include <google/protobuf/text_format.h>

#include <algorithm>
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

void check_same_config(Backend& control, const TrainConfig& config, Millis timeout) {
  const std::string text = resolved_config_text(config);
  char executable[16];
  std::snprintf(executable, sizeof executable, "%08x", executable_checksum());
  const std::string mine = std::string(executable) + "\n" + text;
  const std::vector<std::string> all = allgather_bytes(control, std::to_string(crc32c(mine.data(), mine.size())), timeout);
  if (std::all_of(all.begin(), all.end(), [&](const std::string& h) { return h == all.front(); })) return;
  // Some rank differs: everyone compares with rank 0 and rank 0's view is the message.
  const std::string root = broadcast_bytes(control, mine, 0, timeout);
  std::string difference;
  if (root.substr(0, 8) != mine.substr(0, 8)) {
    difference = "runs another vlm-train executable (CRC-32C " + mine.substr(0, 8) + " vs rank 0's " + root.substr(0, 8) + ")";
  } else {
    TrainConfig root_config;
    google::protobuf::TextFormat::ParseFromString(root.substr(9), &root_config);
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
                    details + "\nHINT: start every rank with the same --config and --set arguments (and the same build)");
}

std::unique_ptr<CheckpointDirectoryLock> prepare_checkpoint_folder(const TrainConfig& config, const Topology& topology,
                                                                   const std::string& resume) {
  const std::string& root = config.checkpoint().dir();
  if (root.empty()) return nullptr;
  std::unique_ptr<CheckpointDirectoryLock> lock;
  if (topology.is_root()) {
    lock = std::make_unique<CheckpointDirectoryLock>(root);
    const int64_t resume_step =
        resume.empty() ? -1 : CheckpointReader(resolve_checkpoint(root, resume)).manifest().step();
    prepare_checkpoint_root(root, resume_step, config.checkpoint().overwrite());
  }
  if (topology.dp_rank() == 0) check_writable(root);  // the ranks that write shards
  return lock;
}

}  // namespace vlm
