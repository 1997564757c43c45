#pragma once
// Cutting an ordered list of blocks into contiguous pipeline stages.

#include <stdexcept>
#include <vector>

namespace vlm {

class PartitionError : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

// First block of each stage (result[0] == 0), choosing contiguous ranges that
// minimise the cost of the most expensive stage (ties: the earliest cut).
// `cut_allowed[i]` says whether a stage may start at block i (i >= 1); empty
// means anywhere. Every stage gets at least one block.
std::vector<int> balanced_partition(const std::vector<double>& block_costs, int stages,
                                    const std::vector<bool>& cut_allowed = {});

// Checks explicit first blocks of stages 1..p-1 and returns all p starts.
std::vector<int> explicit_partition(const std::vector<int>& stage_starts, int blocks, int stages);

}  // namespace vlm
