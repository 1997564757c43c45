#pragma once
// Start-up checks of a job's checkpoint folder, so that what would fail at the
// first save (or silently mix two runs' checkpoints) fails before training.

#include <string>

namespace vlm {

// One job per folder: an exclusive flock on ROOT/.lock, held until this object
// goes (the kernel also drops it when the process dies). A second job gets a
// CheckpointError naming the holder (pid, host, start time).
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
// would collide with this run's), is refused with a message naming them; with
// `overwrite` they are deleted instead, `best` and `latest` first (`best`
// removed if it names one of them, `latest` repointed at the newest
// checkpoint left, or removed), so neither names a missing one.
// Unfinished step directories (a save cut short: no manifest) past
// `resume_step` are deleted in any case.
void prepare_checkpoint_root(const std::string& root, int64_t resume_step, bool overwrite);

}  // namespace vlm
