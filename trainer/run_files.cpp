#include "trainer/run_files.h"

#include <glog/logging.h>

#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <stdexcept>

#include "checkpoint/durable_file.h"
#include "comm/text.h"
#include "trainer/trainer.h"

namespace vlm {
namespace {

// JSON has no NaN or Infinity: a non-finite loss is written as null.
std::string json_number(double value) {
  if (!std::isfinite(value)) return "null";
  char text[32];
  std::snprintf(text, sizeof text, "%.9g", value);
  return text;
}

}  // namespace

void write_endpoint_file(const std::string& run_dir, const Topology& topology, const std::string& scrape_address) {
  const std::filesystem::path folder = std::filesystem::path(run_dir) / "endpoints";
  std::filesystem::create_directories(folder);
  write_file_durably((folder / ("rank-" + std::to_string(topology.rank()) + ".json")).string(),
                     "{\"rank\":" + std::to_string(topology.rank()) + ",\"stage\":" + std::to_string(topology.stage()) +
                         ",\"dp_rank\":" + std::to_string(topology.dp_rank()) + ",\"host\":" + json_string(host_name()) +
                         ",\"address\":" + json_string(scrape_address) + "}\n");
}

StepLog::StepLog(const std::string& run_dir, bool resumed)
    : path_((std::filesystem::path(run_dir) / "metrics.jsonl").string()) {
  namespace fs = std::filesystem;
  fs::create_directories(run_dir);
  std::error_code missing;
  const std::uintmax_t size = fs::file_size(path_, missing);  // (uintmax_t)-1 when missing
  if (!resumed && !missing && size > 0) {
    int n = 1;
    while (fs::exists(fs::path(run_dir) / ("metrics-" + std::to_string(n) + ".jsonl"))) ++n;
    const fs::path kept = fs::path(run_dir) / ("metrics-" + std::to_string(n) + ".jsonl");
    fs::rename(path_, kept);
    LOG(INFO) << path_ << " held an earlier run's steps: kept as " << kept.string() << ", this run starts a new one";
  }
  file_ = std::fopen(path_.c_str(), "a");
  if (file_ == nullptr) throw std::runtime_error("cannot open " + path_ + " for appending: " + std::strerror(errno));
}

StepLog::~StepLog() { std::fclose(file_); }

void StepLog::record(const StepStats& s, bool logged) {
  samples_ += static_cast<double>(s.global_samples);
  seconds_ += s.seconds;
  if (!logged) return;
  const double now = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  std::fprintf(file_,
               "{\"time\":%.3f,\"step\":%lld,\"loss\":%s,\"contrastive_loss\":%s,\"caption_loss\":%s,"
               "\"grad_norm\":%s,\"learning_rate\":%s,\"samples_per_second\":%s,\"step_seconds\":%s,\"skipped\":%s}\n",
               now, static_cast<long long>(s.step + 1), json_number(s.loss).c_str(),
               json_number(s.contrastive_loss).c_str(), json_number(s.caption_loss).c_str(),
               json_number(s.grad_norm).c_str(), json_number(s.learning_rate).c_str(),
               json_number(seconds_ > 0 ? samples_ / seconds_ : 0).c_str(), json_number(s.seconds).c_str(),
               s.skipped ? "true" : "false");
  if (std::fflush(file_) != 0) LOG(WARNING) << "cannot write " << path_ << ": " << std::strerror(errno);
  samples_ = 0;
  seconds_ = 0;
}

}  // namespace vlm
