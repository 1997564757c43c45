#include "comm/byte_collectives.h"

#include <cstring>

namespace vlm {
namespace {

torch::Tensor bytes_tensor(const std::string& bytes) {
  torch::Tensor t = torch::empty({static_cast<int64_t>(bytes.size())}, torch::kByte);
  if (!bytes.empty()) std::memcpy(t.data_ptr(), bytes.data(), bytes.size());
  return t;
}

std::string string_of(const torch::Tensor& t) {
  return std::string(static_cast<const char*>(t.data_ptr()), static_cast<size_t>(t.numel()));
}

torch::Tensor all_lengths(Backend& group, const std::string& mine, Millis timeout) {
  torch::Tensor lengths = torch::empty({group.size()}, torch::kLong);
  group.allgather(torch::full({1}, static_cast<int64_t>(mine.size()), torch::kLong), lengths, {timeout})->wait();
  return lengths;
}

}  // namespace

std::vector<std::string> gather_bytes(Backend& group, const std::string& mine, int root, Millis timeout) {
  const torch::Tensor lengths = all_lengths(group, mine, timeout);
  if (group.rank() != root) {
    if (!mine.empty()) group.send(bytes_tensor(mine), root, {0, timeout})->wait();
    return {};
  }
  std::vector<std::string> all(static_cast<size_t>(group.size()));
  for (int r = 0; r < group.size(); ++r) {
    const int64_t length = lengths[r].item<int64_t>();
    if (r == root) {
      all[r] = mine;
    } else if (length > 0) {
      torch::Tensor bytes = torch::empty({length}, torch::kByte);
      group.recv(bytes, r, {0, timeout})->wait();
      all[r] = string_of(bytes);
    }
  }
  return all;
}

std::vector<std::string> allgather_bytes(Backend& group, const std::string& mine, Millis timeout) {
  const torch::Tensor lengths = all_lengths(group, mine, timeout);
  const int64_t longest = lengths.max().item<int64_t>();
  torch::Tensor padded = torch::zeros({longest}, torch::kByte);
  if (!mine.empty()) std::memcpy(padded.data_ptr(), mine.data(), mine.size());
  torch::Tensor gathered = torch::empty({group.size() * longest}, torch::kByte);
  group.allgather(padded, gathered, {timeout})->wait();
  std::vector<std::string> all;
  for (int r = 0; r < group.size(); ++r) all.push_back(string_of(gathered.narrow(0, r * longest, lengths[r].item<int64_t>())));
  return all;
}

std::string broadcast_bytes(Backend& group, const std::string& mine, int root, Millis timeout) {
  torch::Tensor length = torch::full({1}, static_cast<int64_t>(mine.size()), torch::kLong);
  group.broadcast(length, {root, timeout})->wait();
  torch::Tensor bytes = group.rank() == root ? bytes_tensor(mine) : torch::empty({length.item<int64_t>()}, torch::kByte);
  group.broadcast(bytes, {root, timeout})->wait();
  return string_of(bytes);
}

}  // namespace vlm
