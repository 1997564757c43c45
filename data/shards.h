#pragma once
// A set of WebDataset shards, indexed: every sample's members located by
// shard and offset, so that any sample can be read alone (no shard is ever
// read whole) and the global sample order can be a permutation of indices.
//
// A sample is the consecutive members sharing a key (the member name up to
// the first '.' of its last path component): `<key>.jpg|jpeg|png`,
// `<key>.txt`, and optionally `<key>.json`. What cannot be a sample is
// recorded as Damage, never fatal here: an unreadable shard, a damaged or
// truncated archive, a key without image or without caption.

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "data/tar.h"

namespace vlm {

struct ShardSample {
  int32_t shard = 0;  // index into ShardSet::paths
  std::string key;
  TarMember image, caption;
  TarMember json;  // size 0 when absent
};

struct Damage {
  std::string shard, key;  // key empty when it concerns the archive itself
  std::string what;
  // The samples it cost: 1 for a sample. Damage to an archive (unreadable,
  // truncated, bytes skipped) loses samples no index can count: estimated as
  // the median sample count of the intact shards (a corpus's shards are cut
  // to one size) less what the damaged shard still holds, at least 1.
  int64_t samples = 1;
};

struct ShardSet {
  std::vector<std::string> paths;
  std::vector<ShardSample> samples;  // in shard order, then archive order
  std::vector<Damage> damage;
  uint64_t bytes = 0;  // of all shards
};

// Indexes `paths` in order (brace patterns already expanded).
ShardSet index_shards(const std::vector<std::string>& paths);

// The WebDataset key and extension of a member name ("a/b/000017.seg.png" ->
// {"a/b/000017", "seg.png"}).
std::pair<std::string, std::string> split_key(const std::string& member_name);

// Open archives of a ShardSet, one per shard, opened on first use; reads are
// positioned, so threads may share it.
class ShardReader {
 public:
  explicit ShardReader(const ShardSet& set) : set_(set), files_(set.paths.size()) {}
  std::string read(int32_t shard, const TarMember& member);

 private:
  const ShardSet& set_;
  std::vector<std::unique_ptr<TarFile>> files_;
  std::mutex mutex_;  // guards opening files_; reads need no lock
};

}  // namespace vlm
