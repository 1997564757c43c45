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

// The checkpoint folder, before training. Rank 0 locks it for this job (held
// while the returned object lives; nullptr on other ranks or without
// checkpoint.dir).
std::unique_ptr<CheckpointDirectoryLock> lock_checkpoint_folder(const TrainConfig& config, const Topology& topology);

// Collective over `control`: the step directory this run resumes from, or ""
// for a fresh start, decided by rank 0 alone (--resume made concrete by
// resolve_resume; a `latest` left behind by a save cut short is recovered
// first, checkpoint/directory.h) so that no rank resumes while another starts
// afresh. Call it while rank 0 holds the folder's lock.
std::string agree_on_resume(Backend& control, const TrainConfig& config, const std::string& resume, Millis timeout);

// Reads only: rank 0 refuses what would mix runs (check_checkpoint_root), and
// every rank that writes shards checks it can.
void check_checkpoint_folder(const TrainConfig& config, const Topology& topology, const std::string& resume_from);

// Collective over `control`, once start-up has succeeded and before the first
// save: rank 0 deletes the step directories past the resume step
// (clear_checkpoint_root; complete ones only with checkpoint.overwrite, which
// check_checkpoint_folder enforced), and every rank waits for it.
void clear_checkpoint_folder(Backend& control, const TrainConfig& config, const std::string& resume_from,
                             Millis timeout);

}  // namespace vlm
