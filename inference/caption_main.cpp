// vlm-caption: captions of a folder of the user's own images, from a trained
// model, by KV-cached greedy decoding (docs/inference.md).

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
    "usage: vlm-caption --model CHECKPOINT|MODEL.vlm [--tokenizer FILE] [--batch N] [--out FILE.tsv] FOLDER\n"
    "Captions every image (.jpg, .jpeg, .png) in FOLDER, greedily with the KV cache. Writes one line per\n"
    "image, in name order: FILE<TAB>CAPTION.\n"
    "  --model      a checkpoint (step directory, checkpoint root, its latest or best file) or an\n"
    "               exported model (vlm-ckpt export)\n"
    "  --tokenizer  the SentencePiece model, when it is no longer where the run's config says\n"
    "  --batch      images per forward pass (default 64)\n"
    "  --out        output file (default: standard output)\n";

int run(const InferenceOptions& options) {
  TrainedModel trained = load_trained_model(options.model, options.tokenizer);
  torch::NoGradGuard no_grad;
  const std::vector<std::string> images = files_in(options.folder, is_image_extension);
  if (images.empty()) throw std::invalid_argument(options.folder + ": no .jpg, .jpeg or .png files");
  std::FILE* out = open_output(options.out);
  const CaptionTokens ids{Tokenizer::kBos, Tokenizer::kEos, Tokenizer::kPad};
  in_batches(images, options.batch, "vlm-caption", "images", [&](const std::vector<std::string>& part) {
    const torch::Tensor captions = greedy_caption(trained.model, read_images(part, trained.format), ids).contiguous();
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

int main(int argc, char** argv) { return vlm::inference_main(argc, argv, vlm::kUsage, vlm::run); }
