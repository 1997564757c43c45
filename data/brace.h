#pragma once
// Shard lists as WebDataset writes them: "data/shards-{00000..00127}.tar" is
// 128 paths; "{a,b}" lists alternatives; several groups multiply out, left
// to right. A range keeps the zero padding of its first bound.

#include <string>
#include <vector>

namespace vlm {

// Throws std::invalid_argument for an unbalanced brace or a bad range,
// naming the pattern.
std::vector<std::string> expand_braces(const std::string& pattern);

// Each of `patterns` expanded, in order.
std::vector<std::string> expand_shard_patterns(const std::vector<std::string>& patterns);

}  // namespace vlm
