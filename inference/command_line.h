#pragma once
// What vlm-embed and vlm-caption share: their command line, progress lines,
// and an output file that appears only when complete.

#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "model/sampling_options.h"

namespace vlm {

struct InferenceOptions {
  std::string model;      // --model
  std::string tokenizer;  // --tokenizer ("": the run's)
  std::string out;        // --out ("": standard output)
  int64_t batch = 64;     // --batch
  std::string folder;     // the one positional argument
  Sampling sampling;      // --temperature, --top-k, --top-p, --adaptive-temperature, --seed (vlm-caption)
};

// Parses the command line (exit status 2 and `usage` on a mistake), runs
// `run`, and turns an exception into "NAME: error: ..." and exit status 1.
// `samples`: the tool takes the sampling flags (vlm-caption).
int inference_main(int argc, char** argv, const char* usage, const std::function<int(const InferenceOptions&)>& run,
                   bool samples = false);

// `files` in slices of at most `batch`, in order, with "NAME: 1280/10000
// WHAT" on standard error at most once a second and after the last.
void in_batches(const std::vector<std::string>& files, int64_t batch, const char* tool, const char* what,
                const std::function<void(const std::vector<std::string>&)>& each);

// Standard output when `path` is empty, else PATH.tmp, which
// finish_output() closes and renames to PATH: a file appears only complete.
// A PATH that is a folder or one of `inputs` is refused.
std::FILE* open_output(const std::string& path, const std::vector<std::string>& inputs = {});
void finish_output(std::FILE* out, const std::string& path);

}  // namespace vlm
