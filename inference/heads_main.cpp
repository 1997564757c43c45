// vlm-heads: how much each attention head matters to a trained model, and
// the model with its least important heads removed (docs/inference.md).

#include <cstdio>
#include <stdexcept>
#include <string>

#include "checkpoint/format.h"
#include "comm/error_text.h"
#include "inference/command_line.h"
#include "inference/head_scoring.h"
#include "model/parameters.h"

namespace vlm {
namespace {

const char* const kUsage =
    "usage: vlm-heads --model CHECKPOINT|MODEL.vlm [--tokenizer FILE] [--batches 4] [--batch 128]\n"
    "                 [--scores FILE.tsv] [--remove K --out PRUNED.vlm]\n"
    "Scores every attention head by gradient sensitivity (sum over samples of |A . dL/dA|, over the layers\n"
    "of its sharing group) on the first batches of the run's training data, and prints the scores. A head of\n"
    "a shared weight set is one head of every layer of its group.\n"
    "  --model      a checkpoint (step directory, checkpoint root, its latest or best file) or an\n"
    "               exported model (vlm-ckpt export)\n"
    "  --tokenizer  the SentencePiece model, when it is no longer where the run's config says\n"
    "  --batches, --batch   how many batches of how many samples to score on\n"
    "  --scores     also write SET<TAB>HEAD<TAB>SCORE rows to this file\n"
    "  --remove K   remove the K lowest-scoring heads (each weight set keeps one) and write the smaller\n"
    "               model to --out, a model file vlm-caption, vlm-embed and --init-from read\n";

struct Options {
  std::string model, tokenizer, scores, out;
  int64_t batches = 4, batch = 128, remove = 0;
  bool help = false;
};

int64_t count(const std::string& flag, const std::string& value) {
  size_t used = 0;
  int64_t n = -1;
  try {
    n = std::stoll(value, &used);
  } catch (const std::exception&) {
  }
  if (used != value.size() || n < 0) throw std::invalid_argument(flag + " takes a whole number, not '" + value + "'");
  return n;
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--help" || flag == "-h") {
      o.help = true;
      return o;
    }
    // Read only once the flag is known, so that a stray last flag is "unknown", not "needs a value".
    const auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw std::invalid_argument(flag + " needs a value");
      return argv[i + 1];
    };
    if (flag == "--model") o.model = value();
    else if (flag == "--tokenizer") o.tokenizer = value();
    else if (flag == "--scores") o.scores = value();
    else if (flag == "--out") o.out = value();
    else if (flag == "--batches") o.batches = count(flag, value());
    else if (flag == "--batch") o.batch = count(flag, value());
    else if (flag == "--remove") o.remove = count(flag, value());
    else throw std::invalid_argument("unknown flag " + flag);
  }
  if (o.model.empty()) throw std::invalid_argument("--model is required");
  if (o.batches < 1 || o.batch < 1) throw std::invalid_argument("--batches and --batch must be at least 1");
  if ((o.remove > 0) != !o.out.empty()) throw std::invalid_argument("--remove K and --out PRUNED.vlm go together");
  return o;
}

int run(const Options& o) {
  if (!o.out.empty()) check_output_outside(o.out, o.model, "--out");
  if (!o.scores.empty()) check_output_outside(o.scores, o.model, "--scores");
  TrainedModel trained = load_trained_model(o.model, o.tokenizer);
  const int64_t removable = removable_heads(head_sets(trained.model->spec()));
  if (o.remove > removable) {
    throw std::invalid_argument("cannot remove " + std::to_string(o.remove) +
                                " heads: every attention set keeps one, so at most " + std::to_string(removable) + " can go");
  }
  std::FILE* table = o.scores.empty() ? nullptr : open_output(o.scores);  // a bad path fails before the scoring
  const HeadScores scores = score_trained_heads(trained, o.batches, o.batch);
  std::printf("%-32s %5s %14s\n", "head set", "head", "score");
  for (size_t s = 0; s < scores.sets.size(); ++s) {
    for (size_t h = 0; h < scores.scores[s].size(); ++h) {
      std::printf("%-32s %5zu %14.6g\n", scores.sets[s].name().c_str(), h, scores.scores[s][h]);
      if (table != nullptr) std::fprintf(table, "%s\t%zu\t%.9g\n", scores.sets[s].name().c_str(), h, scores.scores[s][h]);
    }
  }
  if (table != nullptr) finish_output(table, o.scores);
  if (o.remove == 0) return 0;
  ModelConfig config = trained.config.model();
  VlmModel pruned = prune_heads(trained.model, heads_to_keep(scores, o.remove), &config);
  export_pruned_model(o.model, pruned, config, o.out);
  std::printf("removed %lld heads: %s (%lld parameters, %lld before)\n", static_cast<long long>(o.remove), o.out.c_str(),
              static_cast<long long>(unique_parameter_count(*pruned)),
              static_cast<long long>(unique_parameter_count(*trained.model)));
  return 0;
}

}  // namespace
}  // namespace vlm

int main(int argc, char** argv) {
  try {
    const vlm::Options options = vlm::parse(argc, argv);
    if (options.help) {
      std::printf("%s", vlm::kUsage);
      return 0;
    }
    return vlm::run(options);
  } catch (const std::invalid_argument& e) {
    std::fprintf(stderr, "vlm-heads: %s\n%s", e.what(), vlm::kUsage);
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "vlm-heads: error: %s\n", vlm::error_text(e).c_str());
    return 1;
  }
}
