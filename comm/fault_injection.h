#pragma once
// Test hooks for the fault tests (tests/fault_test.sh), inert unless the
// environment variable VLM_FAULT is set:
//   VLM_FAULT=stop:<point>:<rank>[:<step>]  world rank <rank> stops itself
//       (SIGSTOP: a hang, not a death) at fault point <point>, at the first
//       passage with step >= <step>. Points: comm-setup, start-up, step,
//       stop-agreement, checkpoint (shards written), commit (the manifest
//       written, `latest` not yet), evaluation, end.
//   VLM_FAULT=nan:<rank>:<from>[:<to>]  world rank <rank>'s loss is NaN at
//       every 0-based step from <from> (to <to>, inclusive, if given).
//   VLM_FAULT=hold:<step>  every rank, once step <step> is done, waits for
//       its stop signal (at most 300 s) before the stop agreement, so that a
//       test's signal lands after a known step however fast the steps are.

#include <atomic>
#include <cstdint>
#include <string>

namespace vlm {

void fault_point(const std::string& point, int64_t step = 0);
bool inject_nan_loss(int64_t step);
void hold_for_stop_signal(int64_t step, const std::atomic<int>& stop_requested);

}  // namespace vlm
