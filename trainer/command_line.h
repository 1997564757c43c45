#pragma once
// vlm-train's command line: --config FILE [--set field.path=value ...] [--resume W] [--init-from W] [--help].

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
  std::string init_from;               // a fresh start's weights: a checkpoint or an exported model ("" none)
  bool help = false;
};

extern const char* const kTrainUsage;

CommandLine parse_command_line(int argc, char** argv);

}  // namespace vlm
