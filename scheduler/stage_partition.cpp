#include "scheduler/stage_partition.h"

#include <algorithm>
#include <limits>
#include <string>

namespace vlm {

std::vector<int> balanced_partition(const std::vector<double>& costs, int stages, const std::vector<bool>& cut_allowed) {
  const int n = static_cast<int>(costs.size());
  if (stages < 1) throw PartitionError("parallel.pipeline_stages must be >= 1");
  if (stages > n) {
    throw PartitionError("parallel.pipeline_stages(" + std::to_string(stages) + ") exceeds the model's " +
                         std::to_string(n) + " blocks; each stage needs at least one block");
  }
  auto allowed = [&](int i) { return i == 0 || cut_allowed.empty() || cut_allowed[i]; };
  std::vector<double> prefix(n + 1, 0);
  for (int i = 0; i < n; ++i) prefix[i + 1] = prefix[i] + costs[i];
  constexpr double kInf = std::numeric_limits<double>::infinity();
  // best[k][i]: smallest max-stage cost for blocks [0, i) in k stages; from[k][i]: start of the last stage.
  std::vector<std::vector<double>> best(stages + 1, std::vector<double>(n + 1, kInf));
  std::vector<std::vector<int>> from(stages + 1, std::vector<int>(n + 1, -1));
  best[0][0] = 0;
  for (int k = 1; k <= stages; ++k) {
    for (int i = k; i <= n; ++i) {
      for (int j = k - 1; j < i; ++j) {
        if (!allowed(j) || best[k - 1][j] == kInf) continue;
        const double cost = std::max(best[k - 1][j], prefix[i] - prefix[j]);
        if (cost < best[k][i]) best[k][i] = cost, from[k][i] = j;
      }
    }
  }
  if (best[stages][n] == kInf) {
    throw PartitionError("cannot cut " + std::to_string(n) + " blocks into " + std::to_string(stages) +
                         " stages at the allowed places (between attention-sharing groups); set "
                         "parallel.keep_sharing_groups_together=false or use fewer stages");
  }
  std::vector<int> starts(stages);
  for (int k = stages, i = n; k >= 1; --k) {
    starts[k - 1] = from[k][i];
    i = from[k][i];
  }
  return starts;
}

std::vector<int> explicit_partition(const std::vector<int>& stage_starts, int blocks, int stages) {
  if (static_cast<int>(stage_starts.size()) != stages - 1) {
    throw PartitionError("parallel.stage_starts has " + std::to_string(stage_starts.size()) +
                         " entries; it needs pipeline_stages - 1 = " + std::to_string(stages - 1) +
                         " (the first block of stages 1.." + std::to_string(stages - 1) + ")");
  }
  std::vector<int> starts{0};
  for (int s : stage_starts) {
    if (s <= starts.back() || s >= blocks) {
      throw PartitionError("parallel.stage_starts must increase strictly within [1, " + std::to_string(blocks - 1) +
                           "] so that every stage has a block; got " + std::to_string(s) + " after " +
                           std::to_string(starts.back()));
    }
    starts.push_back(s);
  }
  return starts;
}

}  // namespace vlm
