// What users read when LibTorch fails: its message without the C++ backtrace,
// and a hint when memory ran out.
#include "comm/error_text.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <functional>
#include <new>

namespace vlm {
namespace {

std::string text_of(const std::function<void()>& fail) {
  try {
    fail();
  } catch (const std::exception& e) {
    return error_text(e);
  }
  return "(no error)";
}

TEST(ErrorText, LibTorchErrorsLoseTheirBacktrace) {
  const std::string text = text_of([] { TORCH_CHECK(false, "the shapes differ"); });
  EXPECT_NE(text.find("the shapes differ"), std::string::npos) << text;
  EXPECT_EQ(text.find("frame #"), std::string::npos) << text;
  EXPECT_EQ(text.find("HINT"), std::string::npos) << text;
}

TEST(ErrorText, OutOfMemoryNamesTheSettingsThatNeedLess) {
  const std::string text = text_of([] { torch::empty({int64_t{1} << 50}); });  // 4 PiB of floats
  EXPECT_NE(text.find("can't allocate memory"), std::string::npos) << text;
  EXPECT_NE(text.find("HINT: the process ran out of memory; lower loop.global_batch_size"), std::string::npos) << text;
  EXPECT_EQ(text.find("frame #"), std::string::npos) << text;
  EXPECT_NE(text_of([] { throw std::bad_alloc(); }).find("ran out of memory"), std::string::npos);
}

}  // namespace
}  // namespace vlm
