#pragma once
// What vlm-embed and vlm-caption share: their command line, progress lines,
// and an output file that appears only when complete.

#include <cstdio>
#include <functional>
#include <string>

namespace vlm {

struct InferenceOptions {
  std::string model;      // --model
  std::string tokenizer;  // --tokenizer ("": the run's)
  std::string out;        // --out ("": standard output)
  int64_t batch = 64;     // --batch
  std::string folder;     // the one positional argument
};

// Parses the command line (exit status 2 and `usage` on a mistake), runs
// `run`, and turns an exception into "NAME: error: ..." and exit status 1.
int inference_main(int argc, char** argv, const char* usage, const std::function<int(const InferenceOptions&)>& run);

// "NAME: 1280/10000 images" on standard error, at most once a second and at the end.
void progress(const char* tool, size_t done, size_t total, const char* what);

// Closes `out`; when `path` is set, `out` was PATH.tmp and becomes PATH.
void finish_output(std::FILE* out, const std::string& path);

}  // namespace vlm
