#pragma once
// Export to safetensors, the format PyTorch and Hugging Face tools read
// (https://huggingface.co/docs/safetensors): an 8-byte little-endian header
// length N, N bytes of JSON {name: {"dtype", "shape", "data_offsets": [begin,
// end]}, "__metadata__": {string: string}} padded with spaces to a multiple
// of 8, then the tensors' bytes back to back. safetensors has no shared
// tensors: each is stored once under its canonical name, and the metadata
// lists the other names it goes by ("vlmtrain.aliases"), with the run's
// config, the step and the KV-cache layout.

#include <string>

namespace vlm {

// `checkpoint`: a step directory or an exported .vlm file (checkpoint/reader.h).
// Every tensor is checksummed as it is read.
void export_safetensors(const std::string& checkpoint, const std::string& out_file);

}  // namespace vlm
