#include "comm/peer_monitor.h"

#include <glog/logging.h>
#include <sys/stat.h>

#include <algorithm>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <list>

#include "comm/mpi_check.h"
#include "comm/mpi_runtime.h"

namespace vlm {
namespace {

using Clock = std::chrono::steady_clock;

// A heartbeat goes out when the rank's progress changed (at most every
// kHeartbeatMinGap), and at least every kHeartbeatPeriod: what a stopped rank
// last said is then at most about kHeartbeatMinGap old. The monitor wakes every
// kPollPeriod: more often cost 5% of a 2-rank step on 2 cores (its MPI calls
// contend with the communication threads'); this often is within noise.
constexpr auto kHeartbeatPeriod = std::chrono::milliseconds(1000);
constexpr auto kHeartbeatMinGap = std::chrono::milliseconds(100);
constexpr auto kPollPeriod = std::chrono::milliseconds(100);
constexpr Millis kHangSurveyPatience{5000};   // how long live ranks get to answer
constexpr Millis kErrorSurveyPatience{3000};
constexpr Millis kFlightRecordPatience{10000};  // how long writing a flight record may delay the end of the job
constexpr Millis kMonitorStartTimeout{600'000};  // the ranks have just left MPI_Init together
constexpr int kMaxChannels = 24;
enum Tag : int { kHeartbeat = 1, kQuery = 2, kReply = 3 };

std::atomic<PeerMonitor*> g_monitor{nullptr};
std::atomic<uint64_t> g_phase_version{0};
std::mutex g_mutex;  // guards the two strings below
std::string g_phase = "start-up";
std::string g_run_directory = ".";

template <size_t N>
void copy_text(char (&out)[N], const std::string& text) {
  std::snprintf(out, N, "%s", text.c_str());
}

int world_rank() {
  int initialized = 0, rank = 0;
  MPI_Initialized(&initialized);
  if (initialized) MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  return rank;
}

}  // namespace

// One rank's progress as it travels: plain bytes, fixed size.
struct PeerMonitor::Wire {
  int32_t rank = -1;
  int32_t channels = 0;
  char phase[64] = {};
  char current[192] = {};
  char last_completed[160] = {};
  struct Channel {
    char name[64];
    int64_t started, completed;
  } channel[kMaxChannels] = {};

  static Wire now(int rank) {
    Wire w;
    w.rank = rank;
    copy_text(w.phase, current_phase());
    const FlightRecorder& recorder = FlightRecorder::instance();
    copy_text(w.current, recorder.current());
    copy_text(w.last_completed, recorder.last_completed());
    for (const ChannelProgress& c : recorder.progress()) {
      if (w.channels == kMaxChannels) break;
      Channel& out = w.channel[w.channels++];
      copy_text(out.name, c.channel);
      out.started = c.started;
      out.completed = c.completed;
    }
    return w;
  }

  RankProgress progress(bool answered, double age) const {
    RankProgress p;
    p.rank = rank;
    p.answered = answered;
    p.heartbeat_age = age;
    p.phase = phase;
    p.current = current;
    p.last_completed = last_completed;
    for (int32_t i = 0; i < std::min<int32_t>(channels, kMaxChannels); ++i) {
      p.channels.push_back({channel[i].name, channel[i].started, channel[i].completed, ""});
    }
    return p;
  }
};

namespace {

struct Query {
  char reason[1024];
};

// A reply: the rank's own progress and its predecessor's last heartbeat.
template <typename Wire>
struct ReplyOf {
  Wire self;
  int32_t has_predecessor = 0;
  double predecessor_age = -1;
  Wire predecessor;
};

// Sends still in flight, with the buffers they read.
struct PendingSend {
  MPI_Request request = MPI_REQUEST_NULL;
  std::vector<char> buffer;
  bool heartbeat = false;
};

// The ranks other than this one that did not answer a survey.
std::vector<int> did_not_answer(const std::vector<std::optional<RankProgress>>& known) {
  std::vector<int> silent;
  for (int q = 0; q < static_cast<int>(known.size()); ++q) {
    if (q != world_rank() && !(known[q] && known[q]->answered)) silent.push_back(q);
  }
  return silent;
}

}  // namespace

void set_phase(const std::string& phase) {
  std::lock_guard<std::mutex> lock(g_mutex);
  g_phase = phase;
  ++g_phase_version;
}

std::string current_phase() {
  std::lock_guard<std::mutex> lock(g_mutex);
  return g_phase;
}

void set_run_directory(const std::string& dir) {
  std::lock_guard<std::mutex> lock(g_mutex);
  g_run_directory = dir.empty() ? "." : dir;
}

std::string write_flight_record(const std::string& reason, const std::vector<int>& did_not_answer) {
  std::string dir;
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    dir = g_run_directory + "/flight";
  }
  const int rank = world_rank();
  const std::string path = dir + "/rank-" + std::to_string(rank) + ".json";
  // A diagnostic written while the job is torn down: complete (temporary file
  // and rename) but not fsynced, unlike checkpoints.
  std::error_code error;
  std::filesystem::create_directories(dir, error);
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << FlightRecorder::instance().to_json(rank, reason, did_not_answer);
    if (!out.good()) return "";
  }
  return std::rename(tmp.c_str(), path.c_str()) == 0 ? path : "";
}

PeerMonitor::PeerMonitor(MPI_Comm world) {
  // No monitor yet: a report could name no one, but the job still ends.
  run_with_deadline("setup", "comm_dup", "MPI_Comm_dup for the peer monitor (" + process_label() + ")", {},
                    kMonitorStartTimeout, [&] { VLM_MPI_CHECK(MPI_Comm_dup(world, &comm_)); });
  VLM_MPI_CHECK(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN));
  VLM_MPI_CHECK(MPI_Comm_rank(comm_, &rank_));
  VLM_MPI_CHECK(MPI_Comm_size(comm_, &size_));
  g_monitor.store(this);
  thread_ = std::thread([this] { loop(); });
}

PeerMonitor::~PeerMonitor() {
  g_monitor.store(nullptr);
  stopping_.store(true);
  thread_.join();
  MPI_Comm_free(&comm_);
}

void PeerMonitor::loop() {
  std::list<PendingSend> sends;
  auto last_beat = Clock::now() - kHeartbeatPeriod;
  uint64_t beat_version = ~uint64_t{0};  // of the progress the last heartbeat carried
  Wire incoming;
  while (!stopping_.load()) {
    const uint64_t version = FlightRecorder::instance().version() + g_phase_version.load();
    const auto since_beat = Clock::now() - last_beat;
    if (size_ > 1 && (since_beat >= kHeartbeatPeriod || (version != beat_version && since_beat >= kHeartbeatMinGap))) {
      // A successor that stopped reading must not make beats pile up: one in flight at a time.
      if (std::none_of(sends.begin(), sends.end(), [](const PendingSend& s) { return s.heartbeat; })) {
        const Wire beat = Wire::now(rank_);
        PendingSend& send = sends.emplace_back();
        send.heartbeat = true;
        send.buffer.assign(reinterpret_cast<const char*>(&beat), reinterpret_cast<const char*>(&beat) + sizeof beat);
        MPI_Isend(send.buffer.data(), sizeof beat, MPI_BYTE, (rank_ + 1) % size_, kHeartbeat, comm_, &send.request);
        last_beat = Clock::now();
        beat_version = version;
      }
    }
    // Heartbeats from the predecessor: keep the last.
    const int predecessor = (rank_ + size_ - 1) % size_;
    for (int flag = 1; size_ > 1 && flag;) {
      MPI_Iprobe(predecessor, kHeartbeat, comm_, &flag, MPI_STATUS_IGNORE);
      if (!flag) break;
      MPI_Recv(&incoming, sizeof incoming, MPI_BYTE, predecessor, kHeartbeat, comm_, MPI_STATUS_IGNORE);
      std::lock_guard<std::mutex> lock(predecessor_mutex_);
      predecessor_ = std::make_unique<Wire>(incoming);
      predecessor_seen_ = Clock::now();
    }
    // Queries from a rank that noticed a hang or an error: write the flight record, answer.
    for (int flag = 1; flag;) {
      MPI_Status status;
      MPI_Iprobe(MPI_ANY_SOURCE, kQuery, comm_, &flag, &status);
      if (!flag) break;
      Query query;
      MPI_Recv(&query, sizeof query, MPI_BYTE, status.MPI_SOURCE, kQuery, comm_, MPI_STATUS_IGNORE);
      query.reason[sizeof query.reason - 1] = '\0';
      // Before the reply: the asker ends the job once every rank has answered, and the root cause needs the records.
      write_flight_record(std::string("asked by rank ") + std::to_string(status.MPI_SOURCE) + ": " + query.reason);
      ReplyOf<Wire> reply;
      reply.self = Wire::now(rank_);
      {
        std::lock_guard<std::mutex> lock(predecessor_mutex_);
        if (predecessor_) {
          reply.has_predecessor = 1;
          reply.predecessor = *predecessor_;
          reply.predecessor_age = std::chrono::duration<double>(Clock::now() - predecessor_seen_).count();
        }
      }
      PendingSend& send = sends.emplace_back();
      send.buffer.assign(reinterpret_cast<const char*>(&reply), reinterpret_cast<const char*>(&reply) + sizeof reply);
      MPI_Isend(send.buffer.data(), sizeof reply, MPI_BYTE, status.MPI_SOURCE, kReply, comm_, &send.request);
    }
    for (auto it = sends.begin(); it != sends.end();) {
      int done = 0;
      MPI_Test(&it->request, &done, MPI_STATUS_IGNORE);
      it = done ? sends.erase(it) : std::next(it);
    }
    std::this_thread::sleep_for(kPollPeriod);
  }
  // At shutdown every peer is alive (a normal end): let the last sends finish, briefly.
  const auto until = Clock::now() + std::chrono::seconds(1);
  for (auto& send : sends) {
    for (int done = 0; !done && Clock::now() < until;) MPI_Test(&send.request, &done, MPI_STATUS_IGNORE);
  }
}

std::vector<std::optional<RankProgress>> PeerMonitor::survey(const std::string& reason, Millis patience) {
  std::unique_lock<std::mutex> only_once(survey_mutex_, std::try_to_lock);
  while (!only_once.owns_lock()) std::this_thread::sleep_for(std::chrono::seconds(1));  // the first survey ends the job
  const auto deadline = Clock::now() + patience;
  // MPI may still write a late answer into these after this returns, while
  // the job ends: they live for the rest of the process.
  auto& replies = *new std::vector<ReplyOf<Wire>>(static_cast<size_t>(size_));
  auto& receives = *new std::vector<MPI_Request>(static_cast<size_t>(size_), MPI_REQUEST_NULL);
  std::vector<MPI_Request> queries(static_cast<size_t>(size_), MPI_REQUEST_NULL);
  auto& query = *new Query;
  copy_text(query.reason, reason);
  for (int q = 0; q < size_; ++q) {
    if (q == rank_) continue;
    MPI_Irecv(&replies[q], sizeof(ReplyOf<Wire>), MPI_BYTE, q, kReply, comm_, &receives[q]);
    MPI_Isend(&query, sizeof query, MPI_BYTE, q, kQuery, comm_, &queries[q]);
  }
  std::vector<bool> answered(static_cast<size_t>(size_), false);
  answered[rank_] = true;
  for (int waiting = size_ - 1; waiting > 0 && Clock::now() < deadline;) {
    for (int q = 0; q < size_; ++q) {
      if (answered[q]) continue;
      int done = 0;
      MPI_Test(&receives[q], &done, MPI_STATUS_IGNORE);
      if (done) answered[q] = true, --waiting;
    }
    if (waiting > 0) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  std::vector<std::optional<RankProgress>> known(static_cast<size_t>(size_));
  known[rank_] = Wire::now(rank_).progress(true, 0);
  for (int q = 0; q < size_; ++q) {
    if (q != rank_ && answered[q]) known[q] = replies[q].self.progress(true, 0);
  }
  for (int q = 0; q < size_; ++q) {
    if (answered[q]) continue;
    const int successor = (q + 1) % size_;
    if (successor == rank_) {
      std::lock_guard<std::mutex> lock(predecessor_mutex_);
      if (predecessor_) {
        known[q] = predecessor_->progress(false, std::chrono::duration<double>(Clock::now() - predecessor_seen_).count());
      }
    } else if (answered[successor] && replies[successor].has_predecessor) {
      known[q] = replies[successor].predecessor.progress(false, replies[successor].predecessor_age);
    }
  }
  // Requests to ranks that never answered stay pending: the job ends next.
  return known;
}

// The flight record goes to the run folder, whose storage may be what is
// stuck (a dead NFS server): the job ends within `patience` all the same.
void end_job_within(Millis patience, int exit_code) {
  std::thread([patience, exit_code] {
    std::this_thread::sleep_for(patience);
    std::fprintf(stderr, "vlm: the flight record was not written within %.0f s (is the run folder's storage stuck?); "
                 "ending the job without it\n", std::chrono::duration<double>(patience).count());
    MpiRuntime::abort_job(exit_code);
  }).detach();
}

void end_job_on_hang(const StuckOperation& stuck) {
  const int rank = world_rank();
  char header[512];
  std::snprintf(header, sizeof header, "%s did not complete within %.1f s (%s)", stuck.description.c_str(),
                stuck.waited_seconds, current_phase().c_str());
  std::string report;
  std::vector<int> silent;
  if (PeerMonitor* monitor = g_monitor.load()) {
    const auto known = monitor->survey(header, kHangSurveyPatience);
    report = describe_hang(stuck, rank, known);
    silent = did_not_answer(known);
  } else {
    report = describe_hang(stuck, rank, std::vector<std::optional<RankProgress>>(static_cast<size_t>(rank) + 1));
  }
  std::fprintf(stderr, "vlm: HANG detected by rank %d: %s\nvlm: %s", rank, header, report.c_str());
  end_job_within(kFlightRecordPatience, 1);
  const std::string record = write_flight_record(std::string("HANG: ") + header + "\n" + report, silent);
  if (!record.empty()) {
    std::fprintf(stderr, "vlm: flight records: %s (and rank-*.json beside it from every rank that answered)\n",
                 record.c_str());
  }
  MpiRuntime::abort_job(1);
}

void end_job(const std::string& reason, int exit_code) {
  std::vector<int> silent;
  if (PeerMonitor* monitor = g_monitor.load()) silent = did_not_answer(monitor->survey(reason, kErrorSurveyPatience));
  end_job_within(kFlightRecordPatience, exit_code);
  const std::string record = write_flight_record(reason, silent);
  if (!record.empty()) std::fprintf(stderr, "vlm: flight record: %s\n", record.c_str());
  MpiRuntime::abort_job(exit_code);
}

struct DeadlineGuard::State {
  std::mutex mutex;
  std::condition_variable finished;
  bool done = false;
};

DeadlineGuard::DeadlineGuard(StuckOperation stuck, Millis timeout) : state_(std::make_shared<State>()) {
  thread_ = std::thread([state = state_, stuck = std::move(stuck), timeout]() mutable {
    std::unique_lock<std::mutex> lock(state->mutex);
    if (state->finished.wait_for(lock, timeout, [&] { return state->done; })) return;
    lock.unlock();
    stuck.waited_seconds = std::chrono::duration<double>(timeout).count();
    end_job_on_hang(stuck);
  });
}

DeadlineGuard::~DeadlineGuard() {
  {
    std::lock_guard<std::mutex> lock(state_->mutex);
    state_->done = true;
  }
  state_->finished.notify_all();
  thread_.join();
}

void run_with_deadline(const std::string& channel, const std::string& op, const std::string& description,
                       const std::vector<int>& participants, Millis timeout, const std::function<void()>& call) {
  const auto [id, seq] = FlightRecorder::instance().record(channel, op, "", 0);
  StuckOperation stuck;
  stuck.description = description;
  stuck.op = op;
  stuck.group = stuck.channel = stuck.participant_channel = channel;
  stuck.seq = seq;
  stuck.participants = participants;
  try {
    DeadlineGuard guard(stuck, timeout);
    call();
  } catch (...) {
    FlightRecorder::instance().set_state(id, OpState::kFailed);
    throw;
  }
  FlightRecorder::instance().set_state(id, OpState::kCompleted);
}

}  // namespace vlm
