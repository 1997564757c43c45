#include "comm/hang_report.h"

#include <algorithm>
#include <cstdio>
#include <sstream>

#include "comm/text.h"

namespace vlm {
namespace {

std::string set_text(const std::vector<int>& ranks) { return "{" + comma_separated(ranks) + "}"; }

std::string seconds_text(double seconds) {
  char text[32];
  std::snprintf(text, sizeof text, "%.1f s", seconds);
  return text;
}

}  // namespace

int64_t RankProgress::started_on(const std::string& channel) const {
  for (const ChannelProgress& c : channels) {
    if (c.channel == channel) return c.started;
  }
  return 0;
}

std::string describe_hang(const StuckOperation& stuck, int reporting_rank,
                          const std::vector<std::optional<RankProgress>>& known) {
  std::vector<int> missing, unknown;
  for (int r : stuck.participants) {
    if (r == reporting_rank) continue;
    const auto& p = known.at(static_cast<size_t>(r));
    if (!p) {
      unknown.push_back(r);
    } else if (p->started_on(stuck.participant_channel) < stuck.seq) {
      missing.push_back(r);
    }
  }
  std::ostringstream out;
  out << stuck.op << " #" << stuck.seq << " on group " << stuck.group << ": ";
  if (!missing.empty()) {
    out << "ranks " << set_text(missing) << " never arrived";
    for (int r : missing) {
      const RankProgress& p = *known[static_cast<size_t>(r)];
      out << "; rank " << r << "'s last completed op: " << (p.last_completed.empty() ? "none" : p.last_completed)
          << " (it had issued #" << p.started_on(stuck.participant_channel) << " on " << stuck.participant_channel << ")";
    }
  } else if (!unknown.empty()) {
    out << "nothing is known of ranks " << set_text(unknown) << " (no answer, no heartbeat)";
  } else if (stuck.participants.empty()) {
    out << "this rank's own call did not return (no other rank takes part)";
  } else {
    out << "every rank arrived, yet it did not complete (a broken link, or a library stuck inside the operation)";
  }
  out << "\n";
  // The ranks worth a line: those that did not answer (stopped or dead), and those that never arrived.
  for (size_t r = 0; r < known.size(); ++r) {
    if (static_cast<int>(r) == reporting_rank || !known[r]) continue;
    const RankProgress& p = *known[r];
    const bool absent = std::find(missing.begin(), missing.end(), static_cast<int>(r)) != missing.end();
    if (p.answered && !absent) continue;
    out << "  rank " << r << ": ";
    if (p.answered) {
      out << "alive, in phase '" << p.phase << "', "
          << (p.current.empty() ? "inside no operation" : "waiting in " + p.current);
    } else {
      out << "NOT RESPONDING (stopped or dead); at its last heartbeat " << seconds_text(p.heartbeat_age)
          << " ago it was in phase '" << p.phase << "', "
          << (p.current.empty() ? "inside no operation" : "inside " + p.current);
    }
    out << "; last completed: " << (p.last_completed.empty() ? "none" : p.last_completed) << "\n";
  }
  for (int r : unknown) out << "  rank " << r << ": NOT RESPONDING, and no heartbeat of it arrived\n";
  return out.str();
}

}  // namespace vlm
