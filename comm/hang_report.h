#pragma once
// Note [Finding the stuck rank]: when an operation times out, the rank that
// noticed asks every rank for its progress (comm/peer_monitor.h) and decides
// who never arrived by sequence number (Note [Flight recorder]): a rank that
// takes part in the stuck operation's channel but has not started its n-th
// operation there never arrived. A stopped or dead rank cannot answer; what it
// last told its successor in a heartbeat stands in for it. The ranks that time
// out first are usually victims, which is why timestamps are not used.
//
// This file is the pure part: the progress each rank reported, and the report.

#include <optional>
#include <string>
#include <vector>

#include "comm/flight_recorder.h"

namespace vlm {

// An operation that did not finish in time, as the rank that waited for it saw it.
struct StuckOperation {
  std::string description;  // "allreduce(Float x 4) on group dp(stage 0), rank 0 of 2 (host:rank 0)"
  std::string op;           // "allreduce"
  std::string group;        // "dp(stage 0)"
  int64_t seq = 0;          // in `channel` on this rank
  std::string channel;      // this rank's channel of the operation
  // World ranks that must take part, and the channel that counts their arrival:
  // the group's own for a collective; for a recv from q, q's "send:<me>" channel.
  std::vector<int> participants;
  std::string participant_channel;
  double waited_seconds = 0;
};

// What one rank said of itself (or, when it could not answer, what it last
// said in a heartbeat).
struct RankProgress {
  int rank = -1;
  bool answered = false;      // false: taken from its last heartbeat
  double heartbeat_age = -1;  // seconds since that heartbeat; -1 when there was none
  std::string phase;          // "step 12", "checkpoint", "evaluation", ...
  std::string current;        // the operation it is inside, or ""
  std::string last_completed;
  std::vector<ChannelProgress> channels;

  int64_t started_on(const std::string& channel) const;
};

// The report: first line "<op> #<seq> on group <group>: ranks {1} never
// arrived; rank 1's last completed op: ...", then one line per rank worth
// naming. `known[r]` is empty when nothing at all is known of rank r.
std::string describe_hang(const StuckOperation& stuck, int reporting_rank,
                          const std::vector<std::optional<RankProgress>>& known);

}  // namespace vlm
