#pragma once
// Checkpoint files (format: proto/checkpoint.proto). Layout:
//   ROOT/step-NNNNNNNN/shard-RRRRR.bin   raw tensor bytes, one file per writing rank
//   ROOT/step-NNNNNNNN/manifest.pb       written last, atomically: no manifest, no checkpoint
//   ROOT/latest                          the newest complete step directory's name, replaced atomically
//   ROOT/best                            the same for the best validation so far (eval.best_metric)
//   ROOT/.lock                           held by the job writing into ROOT (checkpoint/directory.h)
// Every file carries a checksum, so that any single flipped bit is caught
// before it is used: tensors their CRC-32C in the manifest, the manifest a
// CRC-32C of itself in its header, `latest` the CRC-32C of the name it holds.
// Reading never trusts the files: names, offsets, lengths and sizes are
// checked, and nothing is executed.

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>

#include "proto/checkpoint.pb.h"

namespace vlm {

// 6: the KV-cache layout gives each layer's heads after head pruning
//    (LayerKvCache.cross_heads); the config may carry the attention toolbox.
// 5: optimizer state in pieces (OptimizerRecord.start): ZeRO-1 shards.
// 4: the data identity.
// 3: the manifest and `latest` carry their own CRC-32C; a lineage id.
// 2: CRC-32C tensor checksums (still read).
constexpr int kCheckpointFormatVersion = 6;
constexpr int kOldestReadableFormatVersion = 2;

class CheckpointError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A checkpoint the command names that does not fit this run: another model,
// data or batch; a --resume or --init-from path that holds none; a folder
// holding another run's. The command's input is wrong, and running it again
// fails again (vlm-train exits 2).
class CheckpointMismatch : public CheckpointError {
 public:
  using CheckpointError::CheckpointError;
};

std::string step_directory_name(int64_t step);
// The step of a name such as "step-00000012", or -1 for any other name.
int64_t step_of_directory_name(const std::string& name);

// manifest.pb, version 3: "VLMMANIF", the format version (uint32), a CRC-32C
// (uint32) of the version field, the length field and the message, the
// message's length (uint64), all little-endian, then the message. Version 2
// files are the bare message.
// `version`: other values only to test how a reader meets other versions.
std::string encode_manifest(const Manifest& manifest, int version = kCheckpointFormatVersion);
Manifest decode_manifest(const std::string& bytes, const std::string& path);

// `latest` (and `best`), version 3: "step-NNNNNNNN <CRC-32C of the name, 8
// hex digits>\n"; version 2: "step-NNNNNNNN\n". Returns the step directory's name.
std::string encode_latest(const std::string& step_directory_name);
std::string decode_latest(const std::string& bytes, const std::string& path);

// The step directory ROOT/`pointer` names ("" when ROOT has no such file);
// `pointer` is "latest" or "best".
std::string read_pointer(const std::string& root, const std::string& pointer);
inline std::string read_latest(const std::string& root) { return read_pointer(root, "latest"); }
// The lineage id in `step_directory`'s manifest; nullopt when it cannot be read.
std::optional<uint64_t> lineage_of(const std::string& step_directory);
// "latest" or "best" (read ROOT/latest, ROOT/best) or a path -> the step
// directory. A path that names a `latest` or `best` file, or a checkpoint
// root (then its `latest`), resolves to the step directory it points at.
std::string resolve_checkpoint(const std::string& root, const std::string& which);

// Throws unless writing `output` leaves the model `source` names intact: an
// output inside its checkpoint root (or, for an exported file, the file
// itself) is refused. `flag` names the output in the message ("--out").
void check_output_outside(const std::string& output, const std::string& source, const std::string& flag);

}  // namespace vlm
