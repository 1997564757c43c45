#include "checkpoint/safetensors.h"

#include <google/protobuf/text_format.h>

#include <torch/torch.h>

#include "checkpoint/durable_file.h"
#include "checkpoint/reader.h"
#include "comm/text.h"

namespace vlm {
namespace {

std::string text_of(const google::protobuf::Message& message) {
  std::string text;
  google::protobuf::TextFormat::PrintToString(message, &text);
  return text;
}

}  // namespace

void export_safetensors(const std::string& checkpoint, const std::string& out_file) {
  const CheckpointReader reader(checkpoint);
  const Manifest& m = reader.manifest();
  const auto reads = reader.read_parameters();  // verified on the way out (float32, as every record is checked to be)

  std::string aliases = "{";
  std::string header = "{";
  uint64_t offset = 0;
  for (const auto& [r, t] : reads) {
    std::string shape;
    for (int64_t d : r->shape()) shape += (shape.empty() ? "" : ",") + std::to_string(d);
    const uint64_t end = offset + static_cast<uint64_t>(t.nbytes());
    header += json_string(r->name()) + ":{\"dtype\":\"F32\",\"shape\":[" + shape + "],\"data_offsets\":[" +
              std::to_string(offset) + "," + std::to_string(end) + "]},";
    offset = end;
    if (r->aliases_size() == 0) continue;
    std::string names;
    for (const auto& a : r->aliases()) names += (names.empty() ? "" : ",") + json_string(a);
    aliases += (aliases.size() > 1 ? "," : "") + json_string(r->name()) + ":[" + names + "]";
  }
  aliases += "}";
  header += "\"__metadata__\":{\"format\":\"pt\",\"vlmtrain.format_version\":" +
            json_string(std::to_string(m.format_version())) + ",\"vlmtrain.step\":" + json_string(std::to_string(m.step())) +
            ",\"vlmtrain.aliases\":" + json_string(aliases) + ",\"vlmtrain.config\":" + json_string(text_of(m.config())) +
            ",\"vlmtrain.kv_cache\":" + json_string(text_of(m.kv_cache())) + "}}";
  header.append((8 - header.size() % 8) % 8, ' ');  // the tensors start 8-byte aligned

  std::string length(8, '\0');
  for (int i = 0; i < 8; ++i) length[i] = static_cast<char>((static_cast<uint64_t>(header.size()) >> (8 * i)) & 0xff);
  DurableFile out(out_file);
  out.append(length.data(), length.size());
  out.append(header.data(), header.size());
  for (const auto& [r, t] : reads) out.append(t.data_ptr(), t.nbytes());
  out.commit();
}

}  // namespace vlm
