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

// vlm-train's exit status when the command's input is wrong (command line,
// config, ranks for the topology): the same command would fail again, so
// vlm-launch does not restart it. The tools' usage status.
constexpr int kExitBadInput = 2;

CommandLine parse_command_line(int argc, char** argv);

}  // namespace vlm
