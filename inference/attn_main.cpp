// vlm-attn: where a trained model looks. For each image of a folder, its
// greedy caption and, per caption token, a PNG heat map of the
// cross-attention that token's step paid to the image patches, over the
// image; plus the saliency map when the model gates attention by one
// (docs/inference.md).

#include <torch/torch.h>

#include <cctype>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "data/files.h"
#include "inference/attention_maps.h"
#include "inference/command_line.h"
#include "inference/trained_model.h"

namespace vlm {
namespace {

namespace fs = std::filesystem;

constexpr int kScale = 8;  // a 7-pixel patch becomes 56 pixels

const char* const kUsage =
    "usage: vlm-attn --model CHECKPOINT|MODEL.vlm [--tokenizer FILE] --out DIR FOLDER\n"
    "For every image (.jpg, .jpeg, .png) in FOLDER, in name order: its greedy caption, and in DIR/IMAGE/\n"
    "one PNG per caption token (NN-TOKEN.png) showing, over the image enlarged 8 times, the cross-attention\n"
    "that token's decoding step paid to each patch (mean over heads and multimodal layers; brightest = most),\n"
    "and saliency.png when the model has saliency gating. DIR/index.tsv lists IMAGE<TAB>POSITION<TAB>TOKEN<TAB>FILE.\n"
    "  --model      a checkpoint (step directory, checkpoint root, its latest or best file) or an\n"
    "               exported model (vlm-ckpt export)\n"
    "  --tokenizer  the SentencePiece model, when it is no longer where the run's config says\n"
    "  --out        the folder to write (created if missing)\n";

// A token as part of a file name: letters, digits, '-' and '_' kept, the rest '_'.
std::string file_safe(const std::string& text) {
  std::string out;
  for (char c : text) out += std::isalnum(static_cast<unsigned char>(c)) || c == '-' ? c : '_';
  return out.empty() ? "_" : out;
}

void write_png(const fs::path& path, const Image& image) {
  std::ofstream file(path, std::ios::binary);
  const std::string bytes = encode_png(image);
  file.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  file.close();
  if (!file) throw std::runtime_error(path.string() + ": cannot write (disk full? permissions?)");
}

int run(const InferenceOptions& options) {
  if (options.out.empty()) throw std::invalid_argument("--out DIR is required: the folder the heat maps go to");
  TrainedModel trained = load_trained_model(options.model, options.tokenizer);
  trained.model->eval();
  const std::vector<std::string> images = files_in(options.folder, is_image_extension);
  if (images.empty()) throw std::invalid_argument(options.folder + ": no .jpg, .jpeg or .png files");
  const fs::path out(options.out);
  fs::create_directories(out);
  std::ofstream index(out / "index.tsv");
  const CaptionTokens ids{Tokenizer::kBos, Tokenizer::kEos, Tokenizer::kPad};
  in_batches(images, 1, "vlm-attn", "images", [&](const std::vector<std::string>& one) {
    const std::string name = fs::path(one[0]).filename().string();
    // The whole file name, not its stem: a.png and a.jpg get folders of their own.
    const fs::path folder = out / name;
    fs::create_directories(folder);
    const torch::Tensor image = read_images(one, trained.format);
    const AttentionTrace trace = trace_attention(trained.model, image, ids);
    for (size_t i = 0; i < trace.tokens.size(); ++i) {
      const std::string token = trained.tokenizer->decode(&trace.tokens[i], 1);
      const std::string word = trace.tokens[i] == ids.eos ? "<eos>" : token;
      char prefix[24];
      std::snprintf(prefix, sizeof prefix, "%02zu-", i + 1);
      const std::string file = prefix + file_safe(word) + ".png";
      write_png(folder / file, heat_map(image, trained.format, trace.maps[i], kScale));
      index << name << '\t' << i + 1 << '\t' << word << '\t' << (fs::path(name) / file).string() << '\n';
    }
    const int64_t words = static_cast<int64_t>(trace.tokens.size()) - (!trace.tokens.empty() && trace.tokens.back() == ids.eos);
    const std::string caption = trained.tokenizer->decode(trace.tokens.data(), words);
    if (trace.saliency.defined()) {
      write_png(folder / "saliency.png", heat_map(image, trained.format, trace.saliency, kScale));
      index << name << "\t0\t<saliency>\t" << (fs::path(name) / "saliency.png").string() << '\n';
    }
    std::printf("%s\t%s\n", name.c_str(), caption.c_str());
  });
  index.close();
  if (!index) throw std::runtime_error((out / "index.tsv").string() + ": cannot write");
  return 0;
}

}  // namespace
}  // namespace vlm

int main(int argc, char** argv) { return vlm::inference_main(argc, argv, vlm::kUsage, vlm::run); }
