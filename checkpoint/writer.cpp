#include "checkpoint/writer.h"

#include <algorithm>
#include <filesystem>

#include "checkpoint/chunks.h"
#include "checkpoint/crc32c.h"
#include "comm/fault_injection.h"

namespace vlm {
namespace fs = std::filesystem;

std::vector<uint32_t> checksum_tensors(const std::vector<const torch::Tensor*>& tensors) {
  std::vector<uint64_t> lengths;
  for (const torch::Tensor* t : tensors) {
    TORCH_CHECK(t->is_contiguous() && t->device().is_cpu(), "checksum_tensors: needs contiguous CPU tensors");
    lengths.push_back(t->nbytes());
  }
  const std::vector<Chunk> chunks = split_into_chunks(lengths);
  std::vector<uint32_t> chunk_crcs(chunks.size());
  parallel_over_chunks(chunks, [&](const Chunk& c, size_t index) {
    chunk_crcs[index] = crc32c(static_cast<const char*>(tensors[c.item]->data_ptr()) + c.begin, c.length);
  });
  std::vector<uint32_t> crcs(lengths.size(), 0);
  for (size_t c = 0; c < chunks.size(); ++c) {
    uint32_t& crc = crcs[chunks[c].item];
    crc = chunks[c].begin == 0 ? chunk_crcs[c] : crc32c_combine(crc, chunk_crcs[c], chunks[c].length);
  }
  return crcs;
}

namespace {

// `directory`, created if missing; a CheckpointError naming it otherwise.
const std::string& created(const std::string& directory) {
  std::error_code error;
  fs::create_directories(directory, error);
  if (error) throw CheckpointError(directory + ": cannot create the directory: " + error.message());
  return directory;
}

}  // namespace

ShardWriter::ShardWriter(const std::string& step_directory, const std::string& shard_name)
    : shard_(shard_name), file_(created(step_directory) + "/" + shard_name) {}

TensorRecord ShardWriter::append(const std::string& name, const torch::Tensor& tensor, uint32_t crc) {
  // The bytes written must be the bytes checksummed: no conversion here (make_snapshot does it).
  if (tensor.scalar_type() != torch::kFloat) throw CheckpointError(name + ": only float32 tensors are checkpointed");
  TORCH_CHECK(tensor.device().is_cpu() && tensor.is_contiguous(), name, ": ShardWriter takes contiguous host tensors");
  TensorRecord record;
  record.set_name(name);
  record.set_dtype("float32");
  for (int64_t d : tensor.sizes()) record.add_shape(d);
  record.set_shard(shard_);
  record.set_offset(file_.size());
  record.set_length(tensor.nbytes());
  record.set_crc32c(crc);
  file_.append(tensor.data_ptr(), tensor.nbytes());
  return record;
}

void commit_checkpoint(const std::string& root, const std::string& step_directory, const Manifest& manifest) {
  try {
    fsync_directory(step_directory);  // the shard files' names are durable
    write_file_durably(step_directory + "/manifest.pb", encode_manifest(manifest));
  } catch (const CheckpointError& e) {
    throw CommitError(e.what(), false);
  }
  fault_point("commit", manifest.step());  // a test stops rank 0 here: complete, but `latest` not yet moved
  DurableFile latest(root + "/latest");
  try {
    const std::string pointer = encode_latest(fs::path(step_directory).filename().string());
    latest.append(pointer.data(), pointer.size());
    latest.commit();
  } catch (const CheckpointError& e) {
    throw CommitError(e.what(), latest.renamed());
  }
}

std::string prune_checkpoints(const std::string& root, int keep, const std::string& just_written, uint64_t lineage_id) {
  try {
    const int64_t newest = step_of_directory_name(just_written);
    std::string latest, best, problems;
    try {
      latest = read_latest(root);
    } catch (const std::exception& e) {
      return e.what();  // cannot tell what latest names: delete nothing
    }
    try {
      best = read_pointer(root, "best");
    } catch (const std::exception& e) {
      problems = e.what();  // best only guides what is kept: prune as if there were none
    }
    std::vector<std::pair<int64_t, fs::path>> ours;  // complete, of this lineage, older than just_written
    std::vector<fs::path> unfinished;
    std::error_code error;
    for (fs::directory_iterator it(root, error), end; !error && it != end; it.increment(error)) {
      const fs::path& path = it->path();
      const std::string name = path.filename().string();
      const int64_t step = step_of_directory_name(name);
      std::error_code unreadable;  // an entry that cannot be examined is left alone
      if (step < 0 || step >= newest || name == latest || name == best || !fs::is_directory(path, unreadable)) continue;
      const bool complete = fs::exists(path / "manifest.pb", unreadable);
      if (unreadable) continue;
      if (!complete) {
        unfinished.push_back(path);  // left by a crash or a failed save
      } else if (lineage_of(path.string()) == lineage_id) {  // a damaged one is not provably ours: kept
        ours.emplace_back(step, path);
      }
    }
    if (error) return root + ": cannot list: " + error.message();
    std::sort(ours.begin(), ours.end());
    const size_t keep_older = static_cast<size_t>(std::max(keep - 1, 0));  // just_written is one of `keep`
    std::vector<fs::path> doomed = unfinished;
    for (size_t i = 0; i + keep_older < ours.size(); ++i) doomed.push_back(ours[i].second);
    for (const fs::path& dir : doomed) {
      fs::remove_all(dir, error);
      if (error) problems += (problems.empty() ? "" : "; ") + dir.string() + ": " + error.message();
    }
    return problems;
  } catch (const std::exception& e) {
    return root + ": " + e.what();
  }
}

}  // namespace vlm
