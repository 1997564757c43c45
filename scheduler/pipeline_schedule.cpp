#include "scheduler/pipeline_schedule.h"

#include <algorithm>
#include <deque>
#include <stdexcept>
#include <utility>

namespace vlm {
namespace {

struct ScheduleBuilder {
  int stages, micro_batches, stage;
  std::vector<Action> actions;

  bool first() const { return stage == 0; }
  bool last() const { return stage == stages - 1; }

  void forward(int i) {
    actions.push_back({ActionKind::kLoadMicroBatch, i});  // each stage reads the inputs its blocks need
    if (!first()) actions.push_back({ActionKind::kRecvActivation, i});
    actions.push_back({ActionKind::kForward, i});
    if (!last()) actions.push_back({ActionKind::kSendActivation, i});
  }

  void backward(int i) {
    if (!last()) actions.push_back({ActionKind::kRecvGradient, i});
    actions.push_back({ActionKind::kBackward, i});
    if (!first()) actions.push_back({ActionKind::kSendGradient, i});
  }

  std::vector<Action> finish() {
    // DP first: its buckets may still be in flight, and they hold the very
    // gradients the tied reduction adds to. (Sum over stages and mean over
    // replicas commute, so the order does not change the result.)
    actions.push_back({ActionKind::kReduceDataParallelGradients});
    actions.push_back({ActionKind::kReduceTiedGradients});
    actions.push_back({ActionKind::kOptimizerStep});
    return std::move(actions);
  }
};

void check_arguments(int stages, int micro_batches, int stage) {
  if (stages < 1 || micro_batches < 1 || stage < 0 || stage >= stages) {
    throw std::invalid_argument("pipeline schedule needs stages >= 1, micro_batches >= 1 and 0 <= stage < stages; got " +
                                std::to_string(stages) + ", " + std::to_string(micro_batches) + ", " +
                                std::to_string(stage));
  }
}

}  // namespace

std::vector<Action> gpipe_schedule(int stages, int micro_batches, int stage) {
  check_arguments(stages, micro_batches, stage);
  ScheduleBuilder b{stages, micro_batches, stage, {}};
  for (int i = 0; i < micro_batches; ++i) b.forward(i);
  for (int i = 0; i < micro_batches; ++i) b.backward(i);
  return b.finish();
}

// Megatron-LM's non-interleaved 1F1B: stage s runs min(stages - s - 1, m)
// warm-up forwards, then alternates one forward and one backward, then drains
// the remaining backwards. At most stages - s micro-batches are in flight.
std::vector<Action> one_f_one_b_schedule(int stages, int micro_batches, int stage) {
  check_arguments(stages, micro_batches, stage);
  ScheduleBuilder b{stages, micro_batches, stage, {}};
  const int warmup = std::min(stages - stage - 1, micro_batches);
  int forwarded = 0, backwarded = 0;
  for (int k = 0; k < warmup; ++k) b.forward(forwarded++);
  for (int k = 0; k < micro_batches - warmup; ++k) {
    b.forward(forwarded++);
    b.backward(backwarded++);
  }
  while (backwarded < micro_batches) b.backward(backwarded++);
  return b.finish();
}

std::vector<Action> pipeline_schedule(ScheduleKind kind, int stages, int micro_batches, int stage) {
  return kind == ScheduleKind::kGPipe ? gpipe_schedule(stages, micro_batches, stage)
                                      : one_f_one_b_schedule(stages, micro_batches, stage);
}

const char* action_name(ActionKind kind) {
  switch (kind) {
    case ActionKind::kLoadMicroBatch: return "load";
    case ActionKind::kRecvActivation: return "recv_activation";
    case ActionKind::kForward: return "forward";
    case ActionKind::kSendActivation: return "send_activation";
    case ActionKind::kRecvGradient: return "recv_gradient";
    case ActionKind::kBackward: return "backward";
    case ActionKind::kSendGradient: return "send_gradient";
    case ActionKind::kReduceTiedGradients: return "reduce_tied_gradients";
    case ActionKind::kReduceDataParallelGradients: return "reduce_dp_gradients";
    case ActionKind::kOptimizerStep: return "optimizer_step";
  }
  return "?";
}

std::string describe(const Action& a) {
  return a.micro_batch < 0 ? action_name(a.kind) : std::string(action_name(a.kind)) + "(" + std::to_string(a.micro_batch) + ")";
}

double SimulationResult::bubble_fraction() const {
  if (busy.empty() || makespan <= 0) return 0;
  double idle = 0;
  for (double b : busy) idle += 1.0 - b / makespan;
  return idle / static_cast<double>(busy.size());
}

SimulationResult simulate(const std::vector<std::vector<Action>>& stage_actions, double forward_cost,
                          double backward_cost) {
  const int stages = static_cast<int>(stage_actions.size());
  SimulationResult r;
  r.busy.assign(stages, 0);
  r.peak_in_flight.assign(stages, 0);
  // Channel (s, s+1) of activations and (s+1, s) of gradients: FIFO of (micro-batch, time sent).
  std::vector<std::deque<std::pair<int, double>>> activations(stages), gradients(stages);
  std::vector<size_t> next(stages, 0);
  std::vector<double> clock(stages, 0);
  std::vector<int> in_flight(stages, 0);
  auto fail = [&](const std::string& why) {
    if (r.problem.empty()) r.problem = why;
  };

  bool progressed = true;
  while (progressed) {
    progressed = false;
    for (int s = 0; s < stages; ++s) {
      while (next[s] < stage_actions[s].size()) {
        const Action& a = stage_actions[s][next[s]];
        const std::string where = "stage " + std::to_string(s) + " " + describe(a);
        std::deque<std::pair<int, double>>* inbox = nullptr;
        if (a.kind == ActionKind::kRecvActivation) inbox = s > 0 ? &activations[s - 1] : nullptr;
        if (a.kind == ActionKind::kRecvGradient) inbox = s + 1 < stages ? &gradients[s] : nullptr;
        if ((a.kind == ActionKind::kRecvActivation || a.kind == ActionKind::kRecvGradient) && inbox == nullptr) {
          fail(where + ": no neighbour to receive from");
          ++next[s];
          continue;
        }
        if (inbox != nullptr) {
          if (inbox->empty()) break;  // blocked until the neighbour sends
          if (inbox->front().first != a.micro_batch) {
            fail(where + " got micro-batch " + std::to_string(inbox->front().first) + ": sends and receives are out of order");
          }
          clock[s] = std::max(clock[s], inbox->front().second);
          inbox->pop_front();
        } else if (a.kind == ActionKind::kSendActivation) {
          if (s + 1 >= stages) fail(where + ": no next stage");
          else activations[s].push_back({a.micro_batch, clock[s]});
        } else if (a.kind == ActionKind::kSendGradient) {
          if (s == 0) fail(where + ": no previous stage");
          else gradients[s - 1].push_back({a.micro_batch, clock[s]});
        } else if (a.kind == ActionKind::kForward) {
          clock[s] += forward_cost;
          r.busy[s] += forward_cost;
          r.peak_in_flight[s] = std::max(r.peak_in_flight[s], ++in_flight[s]);
        } else if (a.kind == ActionKind::kBackward) {
          clock[s] += backward_cost;
          r.busy[s] += backward_cost;
          if (--in_flight[s] < 0) fail(where + ": backward before its forward");
          r.makespan = std::max(r.makespan, clock[s]);
        }
        ++next[s];
        progressed = true;
      }
    }
  }
  for (int s = 0; s < stages; ++s) {
    if (next[s] < stage_actions[s].size()) {
      r.deadlocked = true;
      fail("deadlock: stage " + std::to_string(s) + " waits forever at " + describe(stage_actions[s][next[s]]));
    }
    if (!activations[s].empty() || !gradients[s].empty()) fail("stage " + std::to_string(s) + " sent data nobody received");
  }
  return r;
}

}  // namespace vlm
