#pragma once
// Start-up checks of a job's checkpoint folder, so that what would fail at the
// first save (or silently mix two runs' checkpoints) fails before training.

#include <string>

#include "checkpoint/format.h"

namespace vlm {

// Another job holds the folder: it may end, so a later attempt may succeed.
class CheckpointFolderInUse : public CheckpointError {
 public:
  using CheckpointError::CheckpointError;
};

// One job per folder: an exclusive flock on ROOT/.lock, held until this object
// goes (the kernel also drops it when the process dies). A second job gets a
// CheckpointFolderInUse naming the holder (pid, host, start time).
class CheckpointDirectoryLock {
 public:
  explicit CheckpointDirectoryLock(const std::string& root);
  ~CheckpointDirectoryLock();
  CheckpointDirectoryLock(const CheckpointDirectoryLock&) = delete;
  CheckpointDirectoryLock& operator=(const CheckpointDirectoryLock&) = delete;

 private:
  int fd_ = -1;
};

// ROOT exists (it is created) and a file can be written, synced and removed
// in it; the error says why not (a typo, a read-only mount, a full disk).
void check_writable(const std::string& root);

// What a run is about to write into ROOT must not mix with what is there. A
// fresh run (`resume_step` < 0) into a folder holding checkpoints, or a run
// resumed from step s into a folder holding checkpoints of later steps (they
// would collide with this run's), is refused with a message naming them,
// unless `overwrite`. It only reads: clear_checkpoint_root deletes, once the
// run has started well (a typo elsewhere in the config loses nothing).
void check_checkpoint_root(const std::string& root, int64_t resume_step, bool overwrite);

// Deletes every step directory of ROOT past `resume_step`, complete or not
// (a save cut short), `best` and `latest` first (`best` removed if it names
// one of them, `latest` repointed at the newest checkpoint left, or
// removed), so that neither ever names a missing checkpoint.
void clear_checkpoint_root(const std::string& root, int64_t resume_step);

// A save cut short after its manifest and before `latest` (a kill, a crash)
// leaves a complete checkpoint that `latest` does not name, and that would
// be in the way of every resume. When ROOT holds complete checkpoints of
// the lineage `latest` names that are newer than it, `latest` is repointed
// at the newest; without `latest` (the first save was cut short), when every
// complete checkpoint in ROOT is of one lineage, `latest` names the newest.
// Returns its name, or "" when there was nothing to recover.
std::string recover_latest(const std::string& root);

}  // namespace vlm
