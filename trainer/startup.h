#pragma once
// What vlm-train checks at start-up, before it trains, so that a problem ends
// the job at once with a message instead of hours later (or never).

#include <memory>
#include <string>

#include "checkpoint/directory.h"
#include "comm/backend.h"
#include "comm/topology.h"
#include "proto/config.pb.h"

namespace vlm {

// run.dir, else $VLM_RUN_DIR (set by vlm-launch), else checkpoint.dir, else
// the working directory.
std::string run_directory(const TrainConfig& config);

// Creates run_directory(config) if missing; a ConfigError naming where the
// path came from when it cannot be a folder.
void create_run_directory(const TrainConfig& config);

// The --resume argument made concrete: "auto" is "latest" when
// checkpoint.dir holds a checkpoint, else "" (a fresh start); others as given.
std::string resolve_resume(const TrainConfig& config, const std::string& resume);

// The --init-from argument made concrete: the step directory or model file
// to start from, or "" (none, or a resume, which takes precedence). One
// inside checkpoint.dir is refused when checkpoint.overwrite would delete it
// before it is read.
std::string resolve_init_from(const TrainConfig& config, const std::string& init_from, const std::string& resume);

// Collective over `control` (every rank): the ranks' resolved configs, their
// --resume and --init-from, and running executables must be the same. A
// mismatch is a ConfigError on every rank naming the first difference and the
// ranks that differ, e.g. "rank 1 differs from rank 0 in optim.lr: 0.001 vs 0.002".
void check_same_config(Backend& control, const TrainConfig& config, const std::string& resume,
                       const std::string& init_from, Millis timeout);

// The checkpoint folder, before training: rank 0 locks it for this job (held
// while the returned object lives) and refuses what would mix runs
// (checkpoint/directory.h); every rank that writes shards checks it can.
// `resume` is the --resume argument ("" for a fresh run).
std::unique_ptr<CheckpointDirectoryLock> prepare_checkpoint_folder(const TrainConfig& config, const Topology& topology,
                                                                   const std::string& resume);

}  // namespace vlm
