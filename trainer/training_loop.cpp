#include "trainer/training_loop.h"

#include <glog/logging.h>

#include <chrono>
#include <optional>

#include "checkpoint/format.h"
#include "checkpoint/reader.h"
#include "comm/fault_injection.h"
#include "comm/peer_monitor.h"
#include "trainer/progress.h"
#include "trainer/run_files.h"
#include "trainer/setup.h"

namespace vlm {
namespace {

// Whether any rank was asked to stop (a signal may reach only some ranks):
// one tiny allreduce per step on the control group, with the step's timeout.
bool any_rank_stopping(Backend& control, const std::atomic<int>& stop_requested, int64_t step, Millis timeout) {
  set_phase("stop agreement after step " + std::to_string(step));
  fault_point("stop-agreement", step);  // a test stops a rank here
  hold_for_stop_signal(step, stop_requested);  // or holds every rank until its signal
  torch::Tensor stop = torch::full({1}, stop_requested.load(), torch::kInt);
  control.allreduce(stop, {ReduceOp::kMax, timeout})->wait();
  return stop.item<int>() != 0;
}

void save(Trainer& trainer, const TrainConfig& config, const Topology& topology, TrainMetrics* metrics,
          const ValidationRecord* validation) {
  const auto start = std::chrono::steady_clock::now();
  const std::string where = config.checkpoint().dir() + "/" + step_directory_name(trainer.steps_done());
  const bool async = config.checkpoint().async();
  trainer.save_checkpoint(config.checkpoint().dir(), config.checkpoint().keep(), async, validation);
  const double stall = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  LOG_IF(INFO, topology.is_root()) << "checkpoint " << where << (async ? " started; training stalled " : " saved in ")
                                   << stall << " s";
  if (metrics) metrics->record_checkpoint(trainer.steps_done(), stall);
}

// The best validation so far: on a resume, that of the checkpoint ROOT/best
// names. `best` only guides what is kept: a damaged one is a warning.
BestTracker best_so_far(const Trainer& trainer, const TrainConfig& config, const Validator* validator) {
  BestTracker best(config.eval().best_metric());
  const std::string root = config.checkpoint().dir();
  if (validator == nullptr || trainer.steps_done() == 0 || root.empty()) return best;
  try {
    if (read_pointer(root, "best").empty()) return best;
    const CheckpointReader reader(resolve_checkpoint(root, "best"));
    if (reader.manifest().has_validation()) best.restore(reader.manifest().validation(), validator->samples());
  } catch (const std::exception& e) {
    LOG(WARNING) << root << "/best cannot be read (" << e.what() << "): the next validation will be the best so far";
  }
  return best;
}

}  // namespace

bool run_training_loop(Trainer& trainer, const TrainConfig& config, const Topology& topology, Backend& control,
                       Validator* validator, TrainMetrics* metrics, StepLog* step_log,
                       const std::atomic<int>& stop_requested) {
  const LoopConfig::Progress style = config.loop().progress();
  const bool bar = style == LoopConfig::BAR || (style == LoopConfig::AUTO && is_interactive(stdout));
  ProgressReporter progress(config.loop().steps(), config.loop().log_every(), bar, stdout);
  const bool checkpoints = !config.checkpoint().dir().empty();
  const int every = config.checkpoint().every_steps();
  const Millis timeout = seconds_to_millis(config.comm().timeout_seconds());
  const int validate_every = config.eval().every_steps();
  BestTracker best = best_so_far(trainer, config, validator);
  while (trainer.steps_done() < config.loop().steps()) {
    set_phase("step " + std::to_string(trainer.steps_done() + 1));
    const StepStats stats = trainer.train_step();
    if (metrics) {
      metrics->record_step(stats);
      metrics->record_communication(trainer.communication_totals());
    }
    if (topology.is_root()) progress.report(stats);
    if (step_log) step_log->record(stats, is_logged_step(stats.step + 1, config.loop().steps(), config.loop().log_every()));
    const bool last = trainer.steps_done() == config.loop().steps();
    const bool stopping = any_rank_stopping(control, stop_requested, trainer.steps_done(), timeout);
    std::optional<ValidationRecord> validation;
    if (validator && (last || (!stopping && validate_every > 0 && trainer.steps_done() % validate_every == 0))) {
      VlmModel whole = trainer.whole_model();
      const ValidationResult result = validator->run(whole, trainer.steps_done(), control, timeout);
      validation = best.record(result, best.offer(result));
      LOG_IF(INFO, topology.is_root()) << result.summary()
                                       << (validation->best() && checkpoints ? "; the best so far by eval.best_metric " +
                                                                                   validation->best_metric() + ": saved as best"
                                                                             : "");
      if (metrics) metrics->record_validation(result);
    }
    const bool best_now = validation && validation->best();
    if (checkpoints && (last || stopping || best_now || (every > 0 && trainer.steps_done() % every == 0))) {
      save(trainer, config, topology, metrics, validation ? &*validation : nullptr);
    }
    if (last || stopping) trainer.wait_for_checkpoint();  // the final checkpoint is complete before exit
    if (stopping && !last) {
      LOG_IF(INFO, topology.is_root()) << "stopped by a signal after step " << trainer.steps_done()
                                       << (checkpoints ? "; resume with --resume latest" : "");
      return false;
    }
  }
  return true;
}

}  // namespace vlm
