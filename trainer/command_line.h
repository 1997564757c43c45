#pragma once
// vlm-train's command line: --config FILE [--set field.path=value ...] [--help].

#include <stdexcept>
#include <string>
#include <vector>

namespace vlm {

class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct CommandLine {
  std::string config_path;
  std::vector<std::string> overrides;  // "field.path=value", applied in order
  std::string resume;                  // "" (start fresh), "auto", "latest" or a step directory
  bool help = false;
};

extern const char* const kTrainUsage;

CommandLine parse_command_line(int argc, char** argv);

}  // namespace vlm
