// vlm-embed: contrastive embeddings of a folder of the user's own images and
// texts, from a trained model (docs/inference.md).

#include <torch/torch.h>

#include <cstdio>
#include <string>

#include "comm/text.h"
#include "data/batch.h"
#include "data/files.h"
#include "inference/command_line.h"
#include "inference/trained_model.h"

namespace vlm {
namespace {

const char* const kUsage =
    "usage: vlm-embed --model CHECKPOINT|MODEL.vlm [--tokenizer FILE] [--batch N] [--out FILE.jsonl] FOLDER\n"
    "Embeds every image (.jpg, .jpeg, .png) and every text (.txt, its whole content) in FOLDER into the\n"
    "model's shared image-text space (unit vectors: a dot product is a cosine similarity). Writes one JSON\n"
    "line per file, {\"file\", \"kind\": \"image\"|\"text\", \"embedding\": [...]}, in name order, images first.\n"
    "  --model      a checkpoint (step directory, checkpoint root, its latest or best file) or an\n"
    "               exported model (vlm-ckpt export)\n"
    "  --tokenizer  the SentencePiece model, when it is no longer where the run's config says\n"
    "  --batch      files per forward pass (default 64)\n"
    "  --out        output file (default: standard output)\n";

void write_rows(std::FILE* out, const std::vector<std::string>& files, const char* kind, const torch::Tensor& rows) {
  const torch::Tensor host = rows.contiguous();
  for (size_t i = 0; i < files.size(); ++i) {
    std::string line = "{\"file\": " + json_string(files[i]) + ", \"kind\": \"" + kind + "\", \"embedding\": [";
    const float* v = host[static_cast<int64_t>(i)].data_ptr<float>();
    char number[32];
    for (int64_t d = 0; d < host.size(1); ++d) {
      std::snprintf(number, sizeof number, d == 0 ? "%.8g" : ", %.8g", static_cast<double>(v[d]));
      line += number;
    }
    line += "]}\n";
    std::fputs(line.c_str(), out);
  }
}

int run(const InferenceOptions& options) {
  TrainedModel trained = load_trained_model(options.model, options.tokenizer);
  VlmModel& model = trained.model;
  torch::NoGradGuard no_grad;
  const std::vector<std::string> images = files_in(options.folder, is_image_extension);
  const std::vector<std::string> texts = files_in(options.folder, [](const std::string& ext) { return ext == "txt"; });
  if (images.empty() && texts.empty()) throw std::invalid_argument(options.folder + ": no .jpg, .jpeg, .png or .txt files");
  std::vector<std::string> inputs = images;
  inputs.insert(inputs.end(), texts.begin(), texts.end());
  std::FILE* out = open_output(options.out, inputs);
  in_batches(images, options.batch, "vlm-embed", "images", [&](const std::vector<std::string>& part) {
    write_rows(out, part, "image", model->image_embedding(model->encode_image(read_images(part, trained.format))));
  });
  in_batches(texts, options.batch, "vlm-embed", "texts", [&](const std::vector<std::string>& part) {
    std::vector<std::string> contents;
    for (const auto& f : part) contents.push_back(trimmed(read_file(f)));
    auto [tokens, lengths] = tokenize(*trained.tokenizer, contents, model->spec().max_tokens);
    write_rows(out, part, "text", model->text_embedding(model->encode_text(tokens), lengths));
  });
  finish_output(out, options.out);
  std::fprintf(stderr, "vlm-embed: %zu images and %zu texts embedded (%lld dimensions)%s%s\n", images.size(),
               texts.size(), static_cast<long long>(model->spec().embed_dim), options.out.empty() ? "" : " into ",
               options.out.c_str());
  return 0;
}

}  // namespace
}  // namespace vlm

int main(int argc, char** argv) { return vlm::inference_main(argc, argv, vlm::kUsage, vlm::run); }
