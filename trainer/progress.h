#pragma once
// Rank 0's progress report: a redrawn bar on a terminal, plain lines in logs
// and CI (every loop.log_every steps and at the last step).

#include <chrono>
#include <cstdint>
#include <cstdio>

namespace vlm {

struct StepStats;

class ProgressReporter {
 public:
  // `bar`: redraw one line with a bar (terminals) instead of printing lines.
  ProgressReporter(int64_t total_steps, int64_t log_every, bool bar, std::FILE* out);
  void report(const StepStats& stats);

 private:
  int64_t total_steps_;
  int64_t log_every_;
  std::FILE* out_;
  bool bar_;
  std::chrono::steady_clock::time_point start_;
  // The last values read back (a bar redrawn between logged steps on a GPU).
  double loss_ = 0, contrastive_loss_ = 0, caption_loss_ = 0, grad_norm_ = 0;
  double samples_ = 0;
  int64_t steps_ = 0;  // reported by this process (a resumed run starts past step 0)
};

// Whether step `done` (1-based) of `total` is a logged one: every
// `log_every` steps (0: none) and the last.
bool is_logged_step(int64_t done, int64_t total, int64_t log_every);

// Whether AUTO progress should draw a bar on `out`.
bool is_interactive(std::FILE* out);

}  // namespace vlm
