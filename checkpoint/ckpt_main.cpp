// vlm-ckpt: look at checkpoints without training.
//   vlm-ckpt inspect PATH   step, topology, tensors, bytes, shared tensors, KV-cache layout
//   vlm-ckpt verify PATH    read every tensor and check its CRC-32C; exit 1 on any damage
//   vlm-ckpt export PATH OUT.vlm|OUT.safetensors   the model alone in one file, for inference
// PATH is a step directory, a checkpoint root or its `latest` file (then the
// step directory `latest` names), or an exported model file.

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <filesystem>
#include <string>

#include "checkpoint/reader.h"
#include "checkpoint/safetensors.h"
#include "comm/error_text.h"

namespace vlm {
namespace {

const char* const kUsage =
    "usage: vlm-ckpt inspect|verify PATH    or    vlm-ckpt export PATH OUT.vlm|OUT.safetensors\n"
    "  PATH  a step directory (ROOT/step-NNNNNNNN), a checkpoint root or ROOT/latest or ROOT/best (the step\n"
    "        directory it names), or an exported .vlm file\n"
    "  inspect  print step, topology, tensors, bytes, shared tensors and the KV-cache layout\n"
    "  verify   read every tensor and check its checksum; exit status 1 on any damage\n"
    "  export   write the model alone (parameters, config, KV-cache layout) to one file, for inference:\n"
    "           OUT.vlm for vlm-train --init-from, vlm-embed and vlm-caption; OUT.safetensors for PyTorch and\n"
    "           Hugging Face tools (shared tensors once, their other names in the metadata)\n"
    "Exit status: 0 done; 1 damage or an error reading or writing; 2 a wrong command line.\n";

std::string step_directory(const std::string& path) { return resolve_checkpoint("", path); }

void inspect(const CheckpointReader& reader) {
  const Manifest& m = reader.manifest();
  int64_t parameters = 0, aliases = 0, optimizer_bytes = 0;
  for (const auto& t : m.tensors()) parameters += static_cast<int64_t>(t.length()) / 4, aliases += t.aliases_size();
  for (const auto& o : m.optimizer()) optimizer_bytes += static_cast<int64_t>(o.exp_avg().length() + o.exp_avg_sq().length());
  std::printf("checkpoint %s\n", reader.directory().c_str());
  std::printf("  format %d, step %lld, consumed samples %lld\n", m.format_version(), static_cast<long long>(m.step()),
              static_cast<long long>(m.consumed_samples()));
  std::printf("  written by data_parallel %d x pipeline_stages %d, %d ranks\n", m.topology().data_parallel(),
              m.topology().pipeline_stages(), m.ranks_size());
  std::printf("  %d tensors (%lld more names for shared ones), %lld parameters, %lld bytes; optimizer state %lld bytes\n",
              m.tensors_size(), static_cast<long long>(aliases), static_cast<long long>(parameters),
              static_cast<long long>(parameters * 4), static_cast<long long>(optimizer_bytes));
  for (const auto& t : m.tensors()) {
    if (t.aliases_size() > 0) std::printf("    shared: %s (+%d layers)\n", t.name().c_str(), t.aliases_size());
  }
  if (m.has_validation()) {
    const ValidationRecord& v = m.validation();
    std::printf("  validation: %lld samples, contrastive loss %.4f, R@1 image->text %.4f text->image %.4f",
                static_cast<long long>(v.samples()), v.contrastive_loss(), v.image_to_text_r1(), v.text_to_image_r1());
    if (v.zero_shot_samples() > 0) {
      std::printf(", zero-shot accuracy %.4f (%lld samples)", v.zero_shot_accuracy(),
                  static_cast<long long>(v.zero_shot_samples()));
    }
    std::printf("%s\n", v.best() ? ("; best by " + v.best_metric() + " so far").c_str() : "");
  }
  const KvCacheLayout& kv = m.kv_cache();
  std::printf("  KV cache: %lld bytes per token, %lld bytes per image (%lld image tokens)\n",
              static_cast<long long>(kv.bytes_per_token()), static_cast<long long>(kv.bytes_per_image()),
              static_cast<long long>(kv.image_tokens()));
  std::printf("    %5s %-10s %9s %9s %10s %12s %12s\n", "layer", "kind", "attn set", "heads x d", "image K/V", "B/token",
              "B/image");
  for (const auto& l : kv.layers()) {
    std::printf("    %5d %-10s %9d %5d x %-3d %10s %12lld %12lld\n", l.layer(), l.multimodal() ? "multimodal" : "unimodal",
                l.self_attn_weight_group(), l.heads(), l.head_dim(),
                l.cross_kv_layer() < 0 ? "-" : ("layer " + std::to_string(l.cross_kv_layer())).c_str(),
                static_cast<long long>(l.self_kv_bytes_per_token()), static_cast<long long>(l.cross_kv_bytes_per_image()));
  }
}

}  // namespace
}  // namespace vlm

int main(int argc, char** argv) {
  const std::string command = argc > 1 ? argv[1] : "";
  const auto asks_help = [](const std::string& a) { return a == "--help" || a == "-h"; };
  if (std::any_of(argv + 1, argv + argc, asks_help)) {  // vlm-ckpt inspect --help too
    std::printf("%s", vlm::kUsage);
    return 0;
  }
  const bool ok = (argc == 3 && (command == "inspect" || command == "verify")) || (argc == 4 && command == "export");
  if (!ok) {
    std::fprintf(stderr, "%s", vlm::kUsage);
    return 2;
  }
  try {
    if (command == "export") {
      const std::string out = argv[3];
      vlm::check_output_outside(out, argv[2], "OUT");
      std::string suffix = out.size() > 12 ? out.substr(out.size() - 12) : "";
      std::transform(suffix.begin(), suffix.end(), suffix.begin(), [](unsigned char c) { return std::tolower(c); });
      const bool safetensors = suffix == ".safetensors";
      if (safetensors) {
        vlm::export_safetensors(vlm::step_directory(argv[2]), out);
      } else {
        vlm::export_model(vlm::step_directory(argv[2]), out);
      }
      std::printf("exported %s to %s\n", vlm::step_directory(argv[2]).c_str(), argv[3]);
      return 0;
    }
    const vlm::CheckpointReader reader(vlm::step_directory(argv[2]));
    if (std::string(argv[1]) == "inspect") {
      vlm::inspect(reader);
    } else {
      const int64_t bytes = reader.verify_all();
      std::printf("verified %s: %d tensors (with optimizer state when present), %lld bytes, every checksum matches\n",
                  reader.directory().c_str(), reader.manifest().tensors_size(), static_cast<long long>(bytes));
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "vlm-ckpt: %s\n", vlm::error_text(e).c_str());
    return 1;
  }
}
