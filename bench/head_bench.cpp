// vlm-head-bench: accuracy against heads removed. Scores a trained model's
// heads once (vlm-heads), then for K = 0, 1, ... removes the K lowest-scoring
// heads and, side by side, K heads in a seeded random order, and runs the
// end-of-run evaluation on each pruned model (zero-shot accuracy, R@1,
// caption exact match), with its parameters and image-KV bytes per image.
// Prints a table, and one JSON line per pruned model.
//
//   build/bench/vlm-head-bench --model CHECKPOINT [--batches 4] [--batch 128] [--max-remove all] [--seed 1]

#include <algorithm>
#include <cstdio>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "comm/mpi_backend.h"
#include "inference/head_scoring.h"
#include "model/kv_cache_layout.h"
#include "model/parameters.h"
#include "trainer/evaluate.h"
#include "trainer/training_data.h"

#include "bench/bench_main.h"

namespace vlm {
namespace {

// The same sets with scores from a seeded shuffle: removal in a random order.
HeadScores random_scores(const HeadScores& scores, uint64_t seed) {
  HeadScores out = scores;
  std::vector<double> ranks;
  for (const auto& set : scores.scores) ranks.resize(ranks.size() + set.size());
  std::iota(ranks.begin(), ranks.end(), 0.0);
  std::mt19937_64 rng(seed);
  std::shuffle(ranks.begin(), ranks.end(), rng);
  size_t next = 0;
  for (auto& set : out.scores) {
    for (double& s : set) s = ranks[next++];
  }
  return out;
}

int bench(int argc, char** argv) {
  auto flags = parse_bench_flags(argc, argv, {{"model", ""}, {"batches", "4"}, {"batch", "128"}, {"max-remove", "all"},
                                              {"seed", "1"}});
  if (flags["model"].empty()) throw std::invalid_argument("--model CHECKPOINT is required");
  TrainedModel trained = load_trained_model(flags["model"]);
  const HeadScores scores = score_trained_heads(trained, std::stoll(flags["batches"]), std::stoll(flags["batch"]));
  const int64_t removable = removable_heads(scores.sets);
  const int64_t max_remove = flags["max-remove"] == "all" ? removable : std::min<int64_t>(removable, std::stoll(flags["max-remove"]));
  const HeadScores shuffled = random_scores(scores, std::stoull(flags["seed"]));

  TrainConfig config = trained.config;
  config.mutable_eval()->set_enabled(true);
  const auto data = load_training_data(config.data(), config.eval());
  MpiBackend self(MPI_COMM_SELF, "self");
  std::printf("%s: %lld heads in %zu weight sets; scored on %s x %s training samples\n", flags["model"].c_str(),
              static_cast<long long>(removable + static_cast<int64_t>(scores.sets.size())), scores.sets.size(),
              flags["batches"].c_str(), flags["batch"].c_str());
  std::printf("%-7s %-8s %-14s %10s %10s %10s %10s %11s %15s\n", "removed", "order", "heads per set", "zero-shot",
              "R@1 i->t", "R@1 t->i", "caption", "parameters", "image KV bytes");
  for (int64_t k = 0; k <= max_remove; ++k) {
    for (const auto& [order, ranked] : {std::pair{"score", &scores}, std::pair{"random", &shuffled}}) {
      if (k == 0 && std::string(order) == "random") continue;  // the same model
      ModelConfig pruned_config = config.model();
      VlmModel pruned = prune_heads(trained.model, heads_to_keep(*ranked, k), &pruned_config);
      pruned->eval();
      const EvalResult r = evaluate(pruned, *data, config.eval(), self, kDefaultTimeout);
      std::string per_set;
      for (const HeadSet& set : head_sets(pruned->spec())) per_set += (per_set.empty() ? "" : "/") + std::to_string(set.heads);
      const int64_t parameters = unique_parameter_count(*pruned);
      const int64_t kv_bytes = kv_cache_layout(pruned->spec()).bytes_per_image();
      std::printf("%-7lld %-8s %-14s %10.4f %10.4f %10.4f %10.4f %11lld %15lld\n", static_cast<long long>(k), order,
                  per_set.c_str(), r.zero_shot_accuracy, r.image_to_text_r1, r.text_to_image_r1, r.caption_exact_match,
                  static_cast<long long>(parameters), static_cast<long long>(kv_bytes));
      std::printf("{\"bench\":\"head_pruning\",\"removed\":%lld,\"order\":\"%s\",\"heads\":\"%s\",\"zero_shot\":%.4f,"
                  "\"r1_i2t\":%.4f,\"r1_t2i\":%.4f,\"caption_exact_match\":%.4f,\"parameters\":%lld,"
                  "\"image_kv_bytes\":%lld}\n",
                  static_cast<long long>(k), order, per_set.c_str(), r.zero_shot_accuracy, r.image_to_text_r1,
                  r.text_to_image_r1, r.caption_exact_match, static_cast<long long>(parameters),
                  static_cast<long long>(kv_bytes));
      std::fflush(stdout);
    }
  }
  return 0;
}

}  // namespace
}  // namespace vlm

int main(int argc, char** argv) { return vlm::bench_main("vlm-head-bench", argc, argv, vlm::bench); }
