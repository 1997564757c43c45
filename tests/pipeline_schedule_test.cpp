// Pipeline schedules, without MPI: ordering, pairing of sends and receives,
// in-flight bounds, action counts, and a unit-cost simulation whose bubble
// must be (p-1)/(m+p-1) with no deadlock, for p in 1..8 and m in 1..32.

#include <gtest/gtest.h>

#include <map>

#include "scheduler/pipeline_schedule.h"

namespace vlm {
namespace {

std::vector<std::vector<Action>> all_stages(ScheduleKind kind, int p, int m) {
  std::vector<std::vector<Action>> stages;
  for (int s = 0; s < p; ++s) stages.push_back(pipeline_schedule(kind, p, m, s));
  return stages;
}

class Schedules : public ::testing::TestWithParam<ScheduleKind> {};

TEST_P(Schedules, EachForwardPrecedesItsBackwardExactlyOnce) {
  for (int p = 1; p <= 8; ++p) {
    for (int m = 1; m <= 32; ++m) {
      for (int s = 0; s < p; ++s) {
        std::map<int, int> forward_at, backward_at;
        const auto actions = pipeline_schedule(GetParam(), p, m, s);
        for (int k = 0; k < static_cast<int>(actions.size()); ++k) {
          // Braces: ASSERT_TRUE expands to an if/else of its own.
          if (actions[k].kind == ActionKind::kForward) {
            ASSERT_TRUE(forward_at.emplace(actions[k].micro_batch, k).second);
          }
          if (actions[k].kind == ActionKind::kBackward) {
            ASSERT_TRUE(backward_at.emplace(actions[k].micro_batch, k).second);
          }
        }
        ASSERT_EQ(static_cast<int>(forward_at.size()), m);
        ASSERT_EQ(static_cast<int>(backward_at.size()), m);
        for (int i = 0; i < m; ++i) ASSERT_LT(forward_at[i], backward_at[i]) << p << " " << m << " " << s << " " << i;
      }
    }
  }
}

TEST_P(Schedules, ActionCounts) {
  const int p = 4, m = 6;
  for (int s = 0; s < p; ++s) {
    std::map<ActionKind, int> count;
    for (const Action& a : pipeline_schedule(GetParam(), p, m, s)) ++count[a.kind];
    EXPECT_EQ(count[ActionKind::kForward], m);
    EXPECT_EQ(count[ActionKind::kBackward], m);
    EXPECT_EQ(count[ActionKind::kRecvActivation], s > 0 ? m : 0);
    EXPECT_EQ(count[ActionKind::kSendActivation], s < p - 1 ? m : 0);
    EXPECT_EQ(count[ActionKind::kRecvGradient], s < p - 1 ? m : 0);
    EXPECT_EQ(count[ActionKind::kSendGradient], s > 0 ? m : 0);
    EXPECT_EQ(count[ActionKind::kLoadMicroBatch], m);
    EXPECT_EQ(count[ActionKind::kReduceTiedGradients], 1);
    EXPECT_EQ(count[ActionKind::kReduceDataParallelGradients], 1);
    EXPECT_EQ(count[ActionKind::kOptimizerStep], 1);
  }
}

TEST_P(Schedules, SimulationPairsEverySendAndMatchesTheBubbleClosedForm) {
  for (int p = 1; p <= 8; ++p) {
    for (int m = 1; m <= 32; ++m) {
      const SimulationResult r = simulate(all_stages(GetParam(), p, m));
      ASSERT_FALSE(r.deadlocked) << r.problem;
      ASSERT_TRUE(r.problem.empty()) << "p=" << p << " m=" << m << ": " << r.problem;
      EXPECT_NEAR(r.bubble_fraction(), (p - 1.0) / (m + p - 1.0), 1e-12) << "p=" << p << " m=" << m;
      EXPECT_DOUBLE_EQ(r.makespan, 2.0 * (m + p - 1)) << "p=" << p << " m=" << m;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(GPipeAnd1F1B, Schedules, ::testing::Values(ScheduleKind::kGPipe, ScheduleKind::kOneFOneB));

TEST(Schedules, OneFOneBBoundsMicroBatchesInFlight) {
  for (int p = 1; p <= 8; ++p) {
    for (int m = 1; m <= 32; ++m) {
      const SimulationResult one = simulate(all_stages(ScheduleKind::kOneFOneB, p, m));
      const SimulationResult gpipe = simulate(all_stages(ScheduleKind::kGPipe, p, m));
      for (int s = 0; s < p; ++s) {
        EXPECT_EQ(one.peak_in_flight[s], std::min(m, p - s)) << "p=" << p << " m=" << m << " s=" << s;
        EXPECT_EQ(gpipe.peak_in_flight[s], m);
      }
    }
  }
}

TEST(Simulator, DetectsDeadlockAndMisorderedReceives) {
  // Both stages receive first: each waits for the other forever.
  std::vector<std::vector<Action>> cycle = {
      {{ActionKind::kRecvGradient, 0}, {ActionKind::kForward, 0}, {ActionKind::kSendActivation, 0}},
      {{ActionKind::kRecvActivation, 0}, {ActionKind::kForward, 0}, {ActionKind::kSendGradient, 0}}};
  const SimulationResult dead = simulate(cycle);
  EXPECT_TRUE(dead.deadlocked);
  EXPECT_NE(dead.problem.find("deadlock: stage 0 waits forever at recv_gradient(0)"), std::string::npos) << dead.problem;

  std::vector<std::vector<Action>> swapped = {
      {{ActionKind::kSendActivation, 0}, {ActionKind::kSendActivation, 1}},
      {{ActionKind::kRecvActivation, 1}, {ActionKind::kRecvActivation, 0}}};
  EXPECT_NE(simulate(swapped).problem.find("out of order"), std::string::npos);
  EXPECT_THROW(pipeline_schedule(ScheduleKind::kGPipe, 2, 0, 0), std::invalid_argument);
}

}  // namespace
}  // namespace vlm

#include "scheduler/stage_partition.h"

namespace vlm {
namespace {

TEST(Partition, BalancesTheMostExpensiveStage) {
  EXPECT_EQ(balanced_partition({1, 1, 1, 1}, 2), (std::vector<int>{0, 2}));
  EXPECT_EQ(balanced_partition({4, 1, 1, 1, 1}, 2), (std::vector<int>{0, 1}));
  EXPECT_EQ(balanced_partition({1, 2, 3, 4, 5, 6}, 3), (std::vector<int>{0, 3, 5}));  // 6 | 9 | 6
  EXPECT_EQ(balanced_partition({3, 3, 3}, 3), (std::vector<int>{0, 1, 2}));
  EXPECT_EQ(balanced_partition({5}, 1), (std::vector<int>{0}));
}

TEST(Partition, RespectsAllowedCuts) {
  // Blocks 0-1 and 2-3 share weights: cuts only at 2 (or 4).
  EXPECT_EQ(balanced_partition({1, 1, 1, 1, 1}, 2, {true, false, true, false, true}), (std::vector<int>{0, 2}));
  EXPECT_THROW(balanced_partition({1, 1, 1}, 3, {true, false, false}), PartitionError);
}

TEST(Partition, ClearErrors) {
  try {
    balanced_partition({1, 1}, 3);
    FAIL();
  } catch (const PartitionError& e) {
    EXPECT_NE(std::string(e.what()).find("pipeline_stages(3) exceeds the model's 2 blocks"), std::string::npos);
  }
  EXPECT_EQ(explicit_partition({2, 4}, 6, 3), (std::vector<int>{0, 2, 4}));
  EXPECT_THROW(explicit_partition({4, 2}, 6, 3), PartitionError);
  EXPECT_THROW(explicit_partition({2}, 6, 3), PartitionError);
  EXPECT_THROW(explicit_partition({6}, 6, 2), PartitionError);
}

}  // namespace
}  // namespace vlm
