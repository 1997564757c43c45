#pragma once
// Pipeline schedules as pure functions: for (stages, micro-batches, stage)
// they return that stage's ordered list of actions for one optimizer step.
//
// Note [Pipeline communication semantics]: the runtime issues sends
// asynchronously (they complete in the background, like MPI_Isend or
// ncclSend on a side stream) and receives block until their data arrive. A
// schedule therefore deadlocks only if receives wait on each other in a
// cycle; simulate() checks that, and that every send meets the matching
// receive on the neighbour, in the same order.

#include <string>
#include <vector>

namespace vlm {

enum class ActionKind {
  kLoadMicroBatch,      // read the parts of a micro-batch this stage needs (images, tokens, targets)
  kRecvActivation,      // from stage - 1
  kForward,
  kSendActivation,      // to stage + 1
  kRecvGradient,        // from stage + 1
  kBackward,
  kSendGradient,        // to stage - 1
  kReduceDataParallelGradients,  // finish the DP reducer's buckets
  kReduceTiedGradients, // sum gradients of weights shared with other stages
  kOptimizerStep,
};

struct Action {
  ActionKind kind;
  int micro_batch = -1;  // -1 for step-level actions
  bool operator==(const Action& other) const { return kind == other.kind && micro_batch == other.micro_batch; }
};

enum class ScheduleKind {
  kGPipe,    // all forwards, then all backwards (m micro-batches in flight)
  kOneFOneB, // warm-up, one forward one backward, cool-down (<= stages - stage in flight)
};

std::vector<Action> pipeline_schedule(ScheduleKind kind, int stages, int micro_batches, int stage);
std::vector<Action> gpipe_schedule(int stages, int micro_batches, int stage);
std::vector<Action> one_f_one_b_schedule(int stages, int micro_batches, int stage);

const char* action_name(ActionKind kind);
std::string describe(const Action& action);

// Runs every stage's list with the given costs (sends and receives free;
// Note [Pipeline communication semantics]) and reports what happened.
struct SimulationResult {
  bool deadlocked = false;
  std::string problem;             // why, when deadlocked or when sends and receives do not pair up
  double makespan = 0;             // first action to the last stage's last backward
  std::vector<double> busy;        // per stage: time spent in forward and backward
  std::vector<int> peak_in_flight; // per stage: most micro-batches forwarded but not yet backwarded
  double bubble_fraction() const;  // mean over stages of 1 - busy / makespan
};

SimulationResult simulate(const std::vector<std::vector<Action>>& stage_actions, double forward_cost = 1.0,
                          double backward_cost = 1.0);

}  // namespace vlm
