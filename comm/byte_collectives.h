#pragma once
// Byte strings of any length over a Backend of host tensors: the control
// traffic that is not tensors (manifest records, configs, RNG states).

#include <string>
#include <vector>

#include "comm/backend.h"

namespace vlm {

// Every rank's bytes, in group rank order, on `root` (empty elsewhere).
std::vector<std::string> gather_bytes(Backend& group, const std::string& mine, int root, Millis timeout);
// Every rank's bytes, in group rank order, on every rank.
std::vector<std::string> allgather_bytes(Backend& group, const std::string& mine, Millis timeout);
// `root`'s bytes on every rank.
std::string broadcast_bytes(Backend& group, const std::string& mine, int root, Millis timeout);

}  // namespace vlm
