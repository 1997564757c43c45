#include "comm/error_text.h"

#include <c10/util/Exception.h>
#include <glog/logging.h>

#include <new>

namespace vlm {

std::string error_text(const std::exception& error) {
  std::string text = error.what();
  if (const auto* torch_error = dynamic_cast<const c10::Error*>(&error)) {
    VLOG(1) << "the error's backtrace: " << error.what();  // GLOG_v=1 shows it
    text = torch_error->what_without_backtrace();
  }
  // LibTorch's CPU allocator says "can't allocate memory", its CUDA allocator "out of memory".
  const bool out_of_memory = dynamic_cast<const std::bad_alloc*>(&error) != nullptr ||
                             text.find("can't allocate memory") != std::string::npos ||
                             text.find("out of memory") != std::string::npos;
  if (out_of_memory) {
    text += " HINT: the process ran out of memory; lower loop.global_batch_size or raise loop.micro_batches, "
            "set model.activation_checkpointing, or use more ranks (docs/model.md, docs/training.md)";
  }
  return text;
}

}  // namespace vlm
