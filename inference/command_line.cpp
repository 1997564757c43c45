#include "inference/command_line.h"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <stdexcept>

#include "checkpoint/format.h"
#include "comm/error_text.h"
#include "comm/host_allocator.h"
#include "data/files.h"

namespace vlm {
namespace {

class UsageError : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

InferenceOptions parse(int argc, char** argv, bool samples) {
  InferenceOptions options;
  Sampling& sampling = options.sampling;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw UsageError(arg + " needs a value");
      return argv[++i];
    };
    // A number in [low, high], or a usage error naming the flag.
    auto number = [&](double low, double high) {
      const std::string v = value();
      size_t used = 0;
      double x = 0;
      try {
        x = std::stod(v, &used);
      } catch (const std::exception&) {
        used = 0;
      }
      if (used != v.size() || v.empty() || !(x >= low && x <= high)) {
        char range[64];  // %g: "[1e-09, 1]", not "[0.000000, 1.000000]"
        std::snprintf(range, sizeof range, "[%g, %g]", low, high);
        throw UsageError(arg + " must be a number in " + range + ", not '" + v + "'");
      }
      return x;
    };
    if (samples && arg == "--temperature") {
      sampling.temperature = number(0, 100);
      continue;
    } else if (samples && arg == "--top-k") {
      sampling.top_k = static_cast<int64_t>(number(0, 1e9));
      continue;
    } else if (samples && arg == "--top-p") {
      sampling.top_p = number(1e-9, 1);
      continue;
    } else if (samples && arg == "--seed") {
      sampling.seed = static_cast<uint64_t>(number(0, 9.007199254740992e15));
      continue;
    } else if (samples && arg == "--adaptive-temperature") {
      sampling.adaptive_temperature = true;
      continue;
    }
    if (arg == "--model") {
      options.model = value();
    } else if (arg == "--tokenizer") {
      options.tokenizer = value();
    } else if (arg == "--out") {
      options.out = value();
    } else if (arg == "--batch") {
      const std::string v = value();
      try {
        options.batch = std::stoll(v);
      } catch (const std::exception&) {
        options.batch = 0;
      }
      if (options.batch < 1) throw UsageError("--batch must be a positive number, not '" + v + "'");
    } else if (!arg.empty() && arg[0] == '-') {
      throw UsageError("unknown option '" + arg + "'");
    } else if (options.folder.empty()) {
      options.folder = arg;
    } else {
      throw UsageError("one FOLDER only ('" + options.folder + "', then '" + arg + "')");
    }
  }
  if (options.model.empty()) throw UsageError("--model is required");
  if (options.folder.empty()) throw UsageError("FOLDER is required");
  if (sampling.greedy() && (sampling.top_k != 0 || sampling.top_p != 1 || sampling.adaptive_temperature)) {
    throw UsageError("--top-k, --top-p and --adaptive-temperature sample: give a --temperature above 0 as well");
  }
  return options;
}

}  // namespace

int inference_main(int argc, char** argv, const char* usage, const std::function<int(const InferenceOptions&)>& run,
                   bool samples) {
  keep_freed_memory_for_reuse();  // Note [Host allocator]
  const std::string name = std::filesystem::path(argv[0]).filename().string();
  for (int i = 1; i < argc; ++i) {
    if (std::string(argv[i]) == "--help" || std::string(argv[i]) == "-h") {
      std::printf("%s", usage);
      return 0;
    }
  }
  InferenceOptions options;
  try {
    options = parse(argc, argv, samples);
  } catch (const UsageError& e) {
    std::fprintf(stderr, "%s: %s\n%s", name.c_str(), e.what(), usage);
    return 2;
  }
  try {
    if (!options.out.empty()) check_output_outside(options.out, options.model, "--out");
    return run(options);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: error: %s\n", name.c_str(), error_text(e).c_str());
    if (!options.out.empty()) std::remove((options.out + ".tmp").c_str());
    return 1;
  }
}

void in_batches(const std::vector<std::string>& files, int64_t batch, const char* tool, const char* what,
                const std::function<void(const std::vector<std::string>&)>& each) {
  using Clock = std::chrono::steady_clock;
  Clock::time_point last = Clock::now();
  for (size_t start = 0; start < files.size(); start += static_cast<size_t>(batch)) {
    const size_t end = std::min(files.size(), start + static_cast<size_t>(batch));
    each({files.begin() + static_cast<std::ptrdiff_t>(start), files.begin() + static_cast<std::ptrdiff_t>(end)});
    if (end < files.size() && Clock::now() - last < std::chrono::seconds(1)) continue;
    last = Clock::now();
    std::fprintf(stderr, "%s: %zu/%zu %s\n", tool, end, files.size(), what);
  }
}

std::FILE* open_output(const std::string& path, const std::vector<std::string>& inputs) {
  if (path.empty()) return stdout;
  // Refused before any work: the rename onto a folder would fail only at the end.
  if (std::filesystem::is_directory(path)) {
    throw std::invalid_argument(path + " is a folder; --out names a file, e.g. " +
                                (std::filesystem::path(path) / "out.jsonl").string());
  }
  check_not_an_input(path, inputs, "files read");
  std::FILE* out = std::fopen((path + ".tmp").c_str(), "w");
  if (out == nullptr) throw std::invalid_argument(path + ".tmp: cannot write (" + std::strerror(errno) + ")");
  return out;
}

void finish_output(std::FILE* out, const std::string& path) {
  if (path.empty()) {
    std::fflush(out);
    return;
  }
  const bool failed = std::ferror(out) != 0;
  if (std::fclose(out) != 0 || failed) throw std::runtime_error(path + ".tmp: write failed (disk full?)");
  std::filesystem::rename(path + ".tmp", path);
}

}  // namespace vlm
