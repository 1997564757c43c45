// vlm-decode-bench: caption exact match and decoding time of a trained model
// on its run's held-out captions (the Fashion-MNIST canvas), greedy against
// sampled decodings: temperatures, top-k, top-p and the entropy-adaptive
// temperature (model/sampling.h). Sampled settings run once per seed; prints
// a table, and one JSON line per setting.
//
//   build/bench/vlm-decode-bench --model CHECKPOINT [--samples 1000] [--seeds 3] [--batch 500]

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "comm/mpi_backend.h"
#include "inference/trained_model.h"
#include "trainer/evaluate.h"
#include "trainer/training_data.h"

#include "bench/bench_main.h"

namespace vlm {
namespace {

struct Setting {
  const char* name;
  Sampling sampling;
};

int bench(int argc, char** argv) {
  auto flags = parse_bench_flags(argc, argv, {{"model", ""}, {"samples", "1000"}, {"seeds", "3"}, {"batch", "500"}});
  if (flags["model"].empty()) throw std::invalid_argument("--model CHECKPOINT is required");
  const int64_t samples = std::stoll(flags["samples"]), batch = std::stoll(flags["batch"]);
  const int seeds = std::stoi(flags["seeds"]);
  TrainedModel trained = load_trained_model(flags["model"]);
  const auto data = load_training_data(trained.config.data(), trained.config.eval());
  MpiBackend self(MPI_COMM_SELF, "self");
  const EvalShare share(self, kDefaultTimeout);
  const uint64_t eval_seed = static_cast<uint64_t>(trained.config.eval().seed());
  auto sampled = [](double t, int64_t k, double p, bool adaptive) {
    Sampling s;
    s.temperature = t, s.top_k = k, s.top_p = p, s.adaptive_temperature = adaptive;
    return s;
  };
  const std::vector<Setting> settings = {
      {"greedy", {}},
      {"T=1", sampled(1, 0, 1, false)},
      {"T=0.7", sampled(0.7, 0, 1, false)},
      {"T=0.3", sampled(0.3, 0, 1, false)},
      {"T=1 top-k 5", sampled(1, 5, 1, false)},
      {"T=1 top-p 0.9", sampled(1, 0, 0.9, false)},
      {"T=1 adaptive", sampled(1, 0, 1, true)},
      {"T=0.7 adaptive", sampled(0.7, 0, 1, true)},
  };
  caption_exact_match(trained.model, *data, std::min<int64_t>(samples, batch), batch, eval_seed, share);  // warm-up: untimed
  std::printf("%s: %lld held-out captions; sampled settings over %d seeds: mean (min-max)\n", flags["model"].c_str(),
              static_cast<long long>(samples), seeds);
  std::printf("%-16s %28s %12s\n", "decoding", "caption exact match", "seconds");
  for (const Setting& setting : settings) {
    const int runs = setting.sampling.greedy() ? 1 : seeds;
    std::vector<double> matches;
    double seconds = 0;
    for (int seed = 0; seed < runs; ++seed) {
      Sampling s = setting.sampling;
      s.seed = static_cast<uint64_t>(seed);
      const auto start = std::chrono::steady_clock::now();
      matches.push_back(caption_exact_match(trained.model, *data, samples, batch, eval_seed, share, s));
      seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() / runs;
    }
    double mean = 0;
    for (double m : matches) mean += m / static_cast<double>(matches.size());
    const auto [low, high] = std::minmax_element(matches.begin(), matches.end());
    std::printf("%-16s %10.4f (%.4f-%.4f) %12.2f\n", setting.name, mean, *low, *high, seconds);
    std::printf("{\"bench\":\"decode\",\"decoding\":\"%s\",\"exact_match\":%.4f,\"min\":%.4f,\"max\":%.4f,\"runs\":%d,"
                "\"seconds\":%.3f}\n", setting.name, mean, *low, *high, runs, seconds);
  }
  return 0;
}

}  // namespace
}  // namespace vlm

int main(int argc, char** argv) { return vlm::bench_main("vlm-decode-bench", argc, argv, vlm::bench); }
