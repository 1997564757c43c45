// vlm-caption: captions of a folder of the user's own images, from a trained
// model, by KV-cached decoding, greedy or sampled (docs/inference.md).

#include <torch/torch.h>

#include <cstdio>
#include <string>

#include "data/files.h"
#include "inference/command_line.h"
#include "inference/trained_model.h"
#include "model/caption.h"

namespace vlm {
namespace {

const char* const kUsage =
    "usage: vlm-caption --model CHECKPOINT|MODEL.vlm [--tokenizer FILE] [--batch N] [--out FILE.tsv]\n"
    "                   [--temperature T [--top-k K] [--top-p P] [--adaptive-temperature] [--seed S]] FOLDER\n"
    "Captions every image (.jpg, .jpeg, .png) in FOLDER with the KV cache, greedily unless --temperature\n"
    "is given. Writes one line per image, in name order: FILE<TAB>CAPTION.\n"
    "  --model      a checkpoint (step directory, checkpoint root, its latest or best file) or an\n"
    "               exported model (vlm-ckpt export)\n"
    "  --tokenizer  the SentencePiece model, when it is no longer where the run's config says\n"
    "  --batch      images per forward pass (default 64)\n"
    "  --out        output file (default: standard output)\n"
    "  --temperature  sample with this temperature (default 0: greedy)\n"
    "  --top-k      sample among the K most probable tokens only (default 0: all)\n"
    "  --top-p      sample among the fewest most probable tokens whose probability reaches P (default 1)\n"
    "  --adaptive-temperature  sharpen (temperature / 1.2) each step whose entropy is at least the mean of\n"
    "               the caption's last 5 (docs/inference.md)\n"
    "  --seed       the draws' seed (default 0); a caption depends on its image's place in name order and\n"
    "               the seed, not on --batch\n";

int run(const InferenceOptions& options) {
  TrainedModel trained = load_trained_model(options.model, options.tokenizer);
  torch::NoGradGuard no_grad;
  const std::vector<std::string> images = files_in(options.folder, is_image_extension);
  if (images.empty()) throw std::invalid_argument(options.folder + ": no .jpg, .jpeg or .png files");
  std::FILE* out = open_output(options.out, images);
  const CaptionTokens ids{Tokenizer::kBos, Tokenizer::kEos, Tokenizer::kPad};
  int64_t first = 0;  // the batch's first image, in name order: keys its draws
  in_batches(images, options.batch, "vlm-caption", "images", [&](const std::vector<std::string>& part) {
    const torch::Tensor captions =
        decode_captions(trained.model, read_images(part, trained.format), ids, options.sampling, first).contiguous();
    first += static_cast<int64_t>(part.size());
    for (size_t i = 0; i < part.size(); ++i) {
      const int64_t* row = captions[static_cast<int64_t>(i)].data_ptr<int64_t>();
      std::fprintf(out, "%s\t%s\n", part[i].c_str(), trained.tokenizer->decode(row, captions.size(1)).c_str());
    }
  });
  finish_output(out, options.out);
  return 0;
}

}  // namespace
}  // namespace vlm

int main(int argc, char** argv) { return vlm::inference_main(argc, argv, vlm::kUsage, vlm::run, /*samples=*/true); }
