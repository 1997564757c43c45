// The pure parts of hang reports (Note [Finding the stuck rank]) and the
// flight recorder (Note [Flight recorder]).

#include <gtest/gtest.h>

#include "comm/flight_recorder.h"
#include "comm/hang_report.h"

namespace vlm {
namespace {

RankProgress progress(int rank, bool answered, const std::string& channel, int64_t started, const std::string& last) {
  RankProgress p;
  p.rank = rank;
  p.answered = answered;
  p.heartbeat_age = answered ? 0 : 6.5;
  p.phase = "step 12";
  p.last_completed = last;
  p.channels = {{channel, started, started, "allreduce"}};
  return p;
}

StuckOperation allreduce_1842() {
  StuckOperation stuck;
  stuck.op = "allreduce";
  stuck.group = "dp(stage 0)";
  stuck.seq = 1842;
  stuck.channel = stuck.participant_channel = "dp(stage 0)";
  stuck.participants = {0, 1, 2};
  return stuck;
}

TEST(HangReport, NamesTheRankThatNeverArrivedBySequenceNumber) {
  std::vector<std::optional<RankProgress>> known(3);
  known[0] = progress(0, true, "dp(stage 0)", 1842, "allreduce #1841 on dp(stage 0)");
  known[1] = progress(1, false, "dp(stage 0)", 1841, "allreduce #1841 on dp(stage 0)");  // stopped: its last heartbeat
  known[2] = progress(2, true, "dp(stage 0)", 1842, "allreduce #1841 on dp(stage 0)");   // a victim, waiting too
  const std::string report = describe_hang(allreduce_1842(), 0, known);
  EXPECT_EQ(report.substr(0, report.find('\n')),
            "allreduce #1842 on group dp(stage 0): ranks {1} never arrived; rank 1's last completed op: allreduce "
            "#1841 on dp(stage 0) (it had issued #1841 on dp(stage 0))");
  EXPECT_NE(report.find("rank 1: NOT RESPONDING (stopped or dead); at its last heartbeat 6.5 s ago"), std::string::npos)
      << report;
  EXPECT_EQ(report.find("rank 2:"), std::string::npos) << "rank 2 arrived and answered: a victim, not named";
}

TEST(HangReport, ARankWithNoHeartbeatAtAllIsStillNamed) {
  std::vector<std::optional<RankProgress>> known(3);
  known[2] = progress(2, true, "dp(stage 0)", 1842, "");
  const std::string report = describe_hang(allreduce_1842(), 0, known);
  EXPECT_NE(report.find("nothing is known of ranks {1}"), std::string::npos) << report;
  EXPECT_NE(report.find("rank 1: NOT RESPONDING, and no heartbeat of it arrived"), std::string::npos) << report;
}

TEST(HangReport, PointToPointCountsThePeersMatchingChannel) {
  StuckOperation recv;
  recv.op = "recv";
  recv.group = "pp(dp_rank 0)";
  recv.seq = 5;
  recv.channel = "pp(dp_rank 0)/recv:1";
  recv.participants = {1};
  recv.participant_channel = "pp(dp_rank 0)/send:0";  // the sender's channel towards this rank
  std::vector<std::optional<RankProgress>> known(2);
  known[1] = progress(1, true, "pp(dp_rank 0)/send:0", 4, "send #4 on pp(dp_rank 0)/send:0");
  EXPECT_EQ(describe_hang(recv, 0, known).rfind("recv #5 on group pp(dp_rank 0): ranks {1} never arrived", 0), 0u);
  known[1]->channels[0].started = 5;
  EXPECT_NE(describe_hang(recv, 0, known).find("every rank arrived"), std::string::npos);
}

TEST(FlightRecorder, SequenceNumbersAreCountedPerChannel) {
  FlightRecorder& recorder = FlightRecorder::instance();
  const auto [a, seq_a] = recorder.record("test-channel-a", "allreduce", "Float x 4", 16);
  const auto [b, seq_b] = recorder.record("test-channel-b", "barrier", "", 0);
  const auto [c, seq_c] = recorder.record("test-channel-a", "broadcast", "Float x 4", 16);
  EXPECT_EQ(seq_c, seq_a + 1);
  EXPECT_EQ(seq_b, 1);
  recorder.set_state(a, OpState::kStarted);
  recorder.set_state(a, OpState::kCompleted);
  recorder.set_state(c, OpState::kStarted);
  bool found = false;
  for (const ChannelProgress& p : recorder.progress()) {
    if (p.channel != "test-channel-a") continue;
    found = true;
    EXPECT_EQ(p.started, seq_c);
    EXPECT_EQ(p.completed, seq_a);
    EXPECT_EQ(p.last_op, "broadcast");
  }
  EXPECT_TRUE(found) << "no progress for test-channel-a";
  EXPECT_EQ(recorder.current().rfind("barrier #1 on test-channel-b", 0), 0u) << "the oldest unfinished";
  const std::string json = recorder.to_json(3, "a \"quoted\" reason");
  EXPECT_NE(json.find("\"reason\": \"a \\\"quoted\\\" reason\""), std::string::npos) << json;
  EXPECT_NE(json.find("\"did_not_answer\": []"), std::string::npos) << json;
  EXPECT_NE(recorder.to_json(3, "hang", {1, 4}).find("\"did_not_answer\": [1, 4]"), std::string::npos);
  EXPECT_NE(json.find("{\"channel\": \"test-channel-a\", \"seq\": " + std::to_string(seq_c) +
                      ", \"op\": \"broadcast\", \"detail\": \"Float x 4\", \"bytes\": 16, \"state\": \"started\""),
            std::string::npos) << json;
  recorder.set_state(b, OpState::kCompleted);
  recorder.set_state(c, OpState::kCompleted);
}

}  // namespace
}  // namespace vlm
