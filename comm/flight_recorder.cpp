#include "comm/flight_recorder.h"

#include <unistd.h>

#include <cstdio>
#include <ctime>

#include "comm/text.h"

namespace vlm {
namespace {

using Clock = std::chrono::steady_clock;
const Clock::time_point kProcessStart = Clock::now();
const double kProcessStartUnix =
    std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();

std::string number(double value) {
  char text[32];
  std::snprintf(text, sizeof text, "%.6f", value);
  return text;
}

}  // namespace

const char* op_state_name(OpState state) {
  switch (state) {
    case OpState::kQueued: return "queued";
    case OpState::kStarted: return "started";
    case OpState::kCompleted: return "completed";
    case OpState::kFailed: return "failed";
  }
  return "?";
}

FlightRecorder& FlightRecorder::instance() {
  static FlightRecorder recorder;  // trivially safe at exit: no threads, no handles
  return recorder;
}

double FlightRecorder::now() { return std::chrono::duration<double>(Clock::now() - kProcessStart).count(); }

void FlightRecorder::set_capacity(size_t entries) {
  std::lock_guard<std::mutex> lock(mutex_);
  capacity_ = std::max<size_t>(entries, 1);
  while (ring_.size() > capacity_) ring_.pop_front();
}

std::pair<uint64_t, int64_t> FlightRecorder::record(const std::string& channel, const std::string& op,
                                                    const std::string& detail, int64_t bytes) {
  std::lock_guard<std::mutex> lock(mutex_);
  ChannelProgress& progress = channels_[channel];
  progress.channel = channel;
  progress.last_op = op;
  FlightEntry entry;
  entry.id = next_id_++;
  entry.channel = channel;
  entry.seq = ++progress.started;
  entry.op = op;
  entry.detail = detail;
  entry.bytes = bytes;
  entry.queued_at = now();
  if (ring_.size() == capacity_) ring_.pop_front();
  ring_.push_back(std::move(entry));
  ++version_;
  return {ring_.back().id, ring_.back().seq};
}

FlightEntry* FlightRecorder::find(uint64_t id) {
  // Ids increase along the ring: the entry is ring_[id - front id], if still held.
  if (ring_.empty() || id < ring_.front().id) return nullptr;
  const uint64_t index = id - ring_.front().id;
  return index < ring_.size() ? &ring_[index] : nullptr;
}

void FlightRecorder::set_state(uint64_t id, OpState state) {
  std::lock_guard<std::mutex> lock(mutex_);
  FlightEntry* entry = find(id);
  if (entry == nullptr) return;  // fell out of the ring
  entry->state = state;
  ++version_;
  if (state == OpState::kStarted) entry->started_at = now();
  if (state == OpState::kCompleted || state == OpState::kFailed) {
    entry->ended_at = now();
    if (state == OpState::kCompleted) {
      ChannelProgress& progress = channels_[entry->channel];
      progress.completed = std::max(progress.completed, entry->seq);
    }
  }
}

std::vector<ChannelProgress> FlightRecorder::progress() const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<ChannelProgress> out;
  for (const auto& [name, p] : channels_) out.push_back(p);
  return out;
}

std::string FlightRecorder::current() const {
  std::lock_guard<std::mutex> lock(mutex_);
  for (const FlightEntry& e : ring_) {
    if (e.state == OpState::kQueued || e.state == OpState::kStarted) {
      char since[32];
      std::snprintf(since, sizeof since, " for %.1f s", now() - e.queued_at);
      return e.op + " #" + std::to_string(e.seq) + " on " + e.channel + since;
    }
  }
  return "";
}

std::string FlightRecorder::last_completed() const {
  std::lock_guard<std::mutex> lock(mutex_);
  for (auto it = ring_.rbegin(); it != ring_.rend(); ++it) {
    if (it->state == OpState::kCompleted) return it->op + " #" + std::to_string(it->seq) + " on " + it->channel;
  }
  return "";
}

std::string FlightRecorder::to_json(int rank, const std::string& reason, const std::vector<int>& did_not_answer) const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::string out = "{\n  \"rank\": " + std::to_string(rank) + ",\n  \"host\": " + json_string(host_name()) +
                    ",\n  \"pid\": " + std::to_string(getpid()) + ",\n  \"reason\": " + json_string(reason) +
                    ",\n  \"did_not_answer\": [" + comma_separated(did_not_answer) + "]" +
                    ",\n  \"process_start_unix_seconds\": " + number(kProcessStartUnix) +
                    ",\n  \"written_at_seconds\": " + number(now()) + ",\n  \"channels\": [";
  bool first = true;
  for (const auto& [name, p] : channels_) {
    out += std::string(first ? "\n" : ",\n") + "    {\"channel\": " + json_string(name) +
           ", \"started\": " + std::to_string(p.started) + ", \"completed\": " + std::to_string(p.completed) + "}";
    first = false;
  }
  out += "\n  ],\n  \"operations\": [";
  first = true;
  for (const FlightEntry& e : ring_) {
    out += std::string(first ? "\n" : ",\n") + "    {\"channel\": " + json_string(e.channel) +
           ", \"seq\": " + std::to_string(e.seq) + ", \"op\": " + json_string(e.op) +
           ", \"detail\": " + json_string(e.detail) + ", \"bytes\": " + std::to_string(e.bytes) +
           ", \"state\": \"" + op_state_name(e.state) + "\", \"queued_at\": " + number(e.queued_at) +
           ", \"started_at\": " + number(e.started_at) + ", \"ended_at\": " + number(e.ended_at) + "}";
    first = false;
  }
  return out + "\n  ]\n}\n";
}

}  // namespace vlm
