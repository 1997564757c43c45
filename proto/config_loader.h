#pragma once
// Reads an experiment config: protobuf text format plus `--set a.b=value`
// overrides, then checks every field against its (range) option and the
// cross-field rules. Every error names the file:line:column or the --set that
// caused it, the field, and what would be accepted.

#include <stdexcept>
#include <string>
#include <vector>

#include "proto/config.pb.h"

namespace vlm {

// A user error in a config file or an override. The message is complete.
class ConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Loads `path`, applies `overrides` in order ("optim.lr=3e-4"), validates.
TrainConfig load_config(const std::string& path, const std::vector<std::string>& overrides = {});

// Same, from text already in memory; `origin` names it in messages.
TrainConfig parse_config(const std::string& text, const std::string& origin,
                         const std::vector<std::string>& overrides = {});

// The config with every default written out, in text format, for the log.
std::string resolved_config_text(const TrainConfig& config);

// The first field, in declaration order, whose value differs between `a` and
// `b` (defaults included): "optim.lr: 0.001 vs 0.002"; "" when they are equal.
std::string first_difference(const TrainConfig& a, const TrainConfig& b);

}  // namespace vlm
