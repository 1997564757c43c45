#include "trainer/progress.h"

#include <unistd.h>

#include <cstdlib>
#include <string>

#include "trainer/trainer.h"

namespace vlm {
namespace {

std::string clock_text(double seconds) {
  const int s = static_cast<int>(seconds + 0.5);
  char text[32];
  std::snprintf(text, sizeof text, "%d:%02d:%02d", s / 3600, s / 60 % 60, s % 60);
  return text;
}

}  // namespace

bool is_logged_step(int64_t done, int64_t total, int64_t log_every) {
  return done == total || (log_every > 0 && done % log_every == 0);
}

bool is_interactive(std::FILE* out) {
  const char* ci = std::getenv("CI");
  const bool under_mpirun = std::getenv("OMPI_COMM_WORLD_SIZE") != nullptr;
  return isatty(fileno(out)) != 0 && !under_mpirun && (ci == nullptr || std::string(ci) != "true");
}

ProgressReporter::ProgressReporter(int64_t total_steps, int64_t log_every, bool bar, std::FILE* out)
    : total_steps_(total_steps), log_every_(log_every), out_(out), bar_(bar),
      start_(std::chrono::steady_clock::now()) {}

void ProgressReporter::report(const StepStats& s) {
  samples_ += static_cast<double>(s.global_samples);
  ++steps_;
  if (s.has_values) {
    loss_ = s.loss, contrastive_loss_ = s.contrastive_loss, caption_loss_ = s.caption_loss, grad_norm_ = s.grad_norm;
  }
  const int64_t done = s.step + 1;
  const bool last = done == total_steps_;
  if (!bar_ && !is_logged_step(done, total_steps_, log_every_)) return;

  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const double eta = elapsed / static_cast<double>(steps_) * static_cast<double>(total_steps_ - done);
  char line[256];
  std::snprintf(line, sizeof line,
                "step %lld/%lld loss %.4f (contrastive %.4f caption %.4f) grad_norm %.3f lr %.2e "
                "%.0f samples/s elapsed %s eta %s",
                static_cast<long long>(done), static_cast<long long>(total_steps_), loss_,
                contrastive_loss_, caption_loss_, grad_norm_, s.learning_rate, samples_ / elapsed, clock_text(elapsed).c_str(),
                clock_text(eta).c_str());
  if (bar_) {
    constexpr int kWidth = 24;
    const int filled = static_cast<int>(kWidth * done / total_steps_);
    std::fprintf(out_, "\r\033[K[%s%s] %s", std::string(filled, '#').c_str(),
                 std::string(kWidth - filled, '.').c_str(), line);
    if (last) std::fprintf(out_, "\n");
  } else {
    std::fprintf(out_, "%s\n", line);
  }
  std::fflush(out_);
}

}  // namespace vlm
