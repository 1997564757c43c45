// Writing a checkpoint from a snapshot, synchronously or on a background thread.

#include "checkpoint/saver.h"

#include <glog/logging.h>

#include <climits>
#include <cstring>
#include <filesystem>
#include <map>

#include "checkpoint/chunks.h"
#include "checkpoint/writer.h"
#include "comm/byte_collectives.h"
#include "comm/fault_injection.h"
#include "comm/mpi_check.h"
#include "comm/peer_monitor.h"

namespace vlm {
namespace {

// Replaces the snapshot's tensors by copies in `staging`, one host buffer
// reused when large enough: a fresh one costs a page fault per 4 KiB, several
// times the copy itself.
void copy_to_staging(CheckpointSnapshot& snap, torch::Tensor& staging) {
  std::vector<torch::Tensor*> tensors;
  for (auto& p : snap.parameters) tensors.push_back(&p.tensor);
  for (auto& o : snap.optimizer) tensors.push_back(&o.exp_avg), tensors.push_back(&o.exp_avg_sq);
  int64_t total = 0;
  for (const torch::Tensor* t : tensors) total += t->numel();
  if (!staging.defined() || staging.numel() < total) staging = torch::empty({total}, torch::kFloat);
  std::vector<torch::Tensor> sources;
  std::vector<uint64_t> lengths;
  int64_t offset = 0;
  for (torch::Tensor* t : tensors) {
    TORCH_CHECK(t->scalar_type() == torch::kFloat && t->is_contiguous() && t->device().is_cpu(),
                "checkpoint tensors are contiguous float32 host tensors (make_snapshot)");
    sources.push_back(*t);
    lengths.push_back(t->nbytes());
    *t = staging.narrow(0, offset, t->numel()).view(t->sizes());
    offset += t->numel();
  }
  parallel_over_chunks(split_into_chunks(lengths), [&](const Chunk& c, size_t) {
    std::memcpy(static_cast<char*>(tensors[c.item]->data_ptr()) + c.begin,
                static_cast<const char*>(sources[c.item].data_ptr()) + c.begin, c.length);
  });
}

// This rank's tensors into its shard file, fsynced; returns their records.
Manifest write_shard(const CheckpointSnapshot& snap, const std::string& directory) {
  Manifest manifest;
  if (snap.parameters.empty() && snap.optimizer.empty()) return manifest;
  // Checksums first, in parallel; then one sequential write.
  std::vector<const torch::Tensor*> order;
  for (const auto& p : snap.parameters) order.push_back(&p.tensor);
  for (const auto& o : snap.optimizer) order.push_back(&o.exp_avg), order.push_back(&o.exp_avg_sq);
  const std::vector<uint32_t> crcs = checksum_tensors(order);
  char shard_name[32];
  std::snprintf(shard_name, sizeof shard_name, "shard-%05d.bin", snap.shard);
  ShardWriter shard(directory, shard_name);
  size_t next = 0;
  for (const auto& p : snap.parameters) {
    TensorRecord* record = manifest.add_tensors();
    *record = shard.append(p.name, p.tensor, crcs[next++]);
    for (const auto& alias : p.aliases) record->add_aliases(alias);
  }
  for (const auto& o : snap.optimizer) {
    OptimizerRecord* record = manifest.add_optimizer();
    record->set_parameter(o.parameter);
    record->set_step(o.step);
    record->set_start(o.start);
    const std::string piece = o.parameter + (o.start == 0 ? "" : "@" + std::to_string(o.start));
    *record->mutable_exp_avg() = shard.append(piece + "#exp_avg", o.exp_avg, crcs[next++]);
    *record->mutable_exp_avg_sq() = shard.append(piece + "#exp_avg_sq", o.exp_avg_sq, crcs[next++]);
  }
  shard.commit();
  return manifest;
}

// Collective: every rank learns whether any failed, so none waits forever
// for a failed one. A failed rank rethrows its own error; the others name it.
void agree_on_success(std::exception_ptr failure, Backend& group, Millis timeout, const std::string& what) {
  torch::Tensor first_failed = torch::full({1}, failure ? group.rank() : INT_MAX, torch::kInt);
  // Min over ranks as max over negated ranks.
  first_failed.neg_();
  group.allreduce(first_failed, {ReduceOp::kMax, timeout})->wait();
  const int first = -first_failed.item<int>();
  if (failure) std::rethrow_exception(failure);
  if (first != INT_MAX) {
    throw CheckpointError("rank " + std::to_string(group.members().at(first)) + " failed to " + what + " (see its error)");
  }
}

Manifest merged_manifest(const CheckpointSnapshot& snap, const std::vector<std::string>& records,
                         const std::vector<std::string>& rng_states) {
  Manifest manifest;
  for (size_t r = 0; r < records.size(); ++r) {
    Manifest part;
    if (!part.ParseFromString(records[r])) throw CheckpointError("corrupt records from rank " + std::to_string(r));
    manifest.MergeFrom(part);
  }
  manifest.set_format_version(kCheckpointFormatVersion);
  manifest.set_step(snap.step);
  manifest.set_consumed_samples(snap.consumed_samples);
  manifest.set_lineage_id(snap.lineage_id);
  *manifest.mutable_config() = snap.config;
  manifest.mutable_topology()->set_data_parallel(snap.topology.data_parallel);
  manifest.mutable_topology()->set_pipeline_stages(snap.topology.pipeline_stages);
  for (int start : snap.stage_starts) manifest.mutable_topology()->add_stage_starts(start);
  manifest.set_lr_schedule_step(snap.step);
  for (size_t r = 0; r < rng_states.size(); ++r) {
    RankState* state = manifest.add_ranks();
    state->set_rank(static_cast<int32_t>(r));
    state->set_torch_rng_state(rng_states[r]);
  }
  for (int d = 0; d < snap.topology.data_parallel; ++d) {
    DataCursor* cursor = manifest.add_cursors();
    cursor->set_dp_rank(d);
    cursor->set_step(snap.step);
    cursor->set_consumed_samples(snap.consumed_samples);
  }
  *manifest.mutable_kv_cache() = snap.kv_cache;
  *manifest.mutable_data() = snap.data;
  if (snap.has_validation) *manifest.mutable_validation() = snap.validation;
  return manifest;
}

}  // namespace

CheckpointSnapshot make_snapshot(int64_t step, const TrainConfig& config, const Topology& topology,
                                 const std::vector<UniqueParameter>& to_write, const std::vector<AdamState>& optimizer) {
  CheckpointSnapshot snap;
  snap.step = step;
  snap.consumed_samples = step * config.loop().global_batch_size();
  snap.config = config;
  snap.topology = topology;
  snap.rng_state = at::detail::getDefaultCPUGenerator().get_state();
  // The live tensors; only what is not contiguous host memory (a GPU's) is copied now.
  auto host = [](const torch::Tensor& t) {
    const torch::Tensor d = t.detach();
    return d.device().is_cpu() && d.is_contiguous() ? d : d.to(torch::kCPU).contiguous();
  };
  for (const UniqueParameter& p : to_write) snap.parameters.push_back({p.name, p.aliases, host(p.tensor)});
  for (const AdamState& a : optimizer) snap.optimizer.push_back({a.parameter, a.start, a.step, host(a.exp_avg), host(a.exp_avg_sq)});
  return snap;
}

void write_checkpoint(const CheckpointSnapshot& snap, const std::string& root, int keep, Backend& group, Millis timeout,
                      std::exception_ptr failed_before) {
  const std::string name = step_directory_name(snap.step);
  const std::string directory = root + "/" + name;
  Manifest records;
  std::exception_ptr failure = failed_before;
  if (!failure) {
    try {
      // Shards first, manifest last: a complete checkpoint of this step would
      // be damaged in place (new shards, old manifest) until the commit.
      if (std::filesystem::exists(directory + "/manifest.pb")) {
        throw CheckpointError(directory + " already holds a checkpoint; a step is saved once per folder");
      }
      // Bounded like the collectives: when every rank writes (ZeRO-1, stages, one process) none waits in one.
      run_with_deadline("checkpoint", "write", "writing " + process_label() + "'s shard of " + directory +
                        " (is its storage stuck?)", {}, timeout, [&] { records = write_shard(snap, directory); });
      fault_point("checkpoint", snap.step);  // a test stops a rank here: shards written, nothing agreed
    } catch (...) {
      failure = std::current_exception();
    }
  }
  try {
    agree_on_success(failure, group, timeout, "write its part of " + directory + "; nothing was committed");
  } catch (...) {
    // Every rank is done writing: the unfinished directory goes (no manifest, no checkpoint; its bytes are freed).
    std::error_code ignored;
    if (group.rank() == 0 && !std::filesystem::exists(directory + "/manifest.pb")) {
      std::filesystem::remove_all(directory, ignored);
    }
    throw;
  }
  // Every rank's RNG state and records to rank 0, which merges them into one manifest.
  const torch::Tensor rng = snap.rng_state.contiguous();
  const std::string rng_bytes(static_cast<const char*>(rng.data_ptr()), static_cast<size_t>(rng.nbytes()));
  std::string record_bytes;
  records.SerializeToString(&record_bytes);
  const std::vector<std::string> rng_states = gather_bytes(group, rng_bytes, 0, timeout);
  const std::vector<std::string> all_records = gather_bytes(group, record_bytes, 0, timeout);
  if (group.rank() == 0) {
    try {
      run_with_deadline("checkpoint", "commit", "committing " + directory + " (manifest.pb, then latest; is the "
                        "storage stuck?)", {}, timeout,
                        [&] { commit_checkpoint(root, directory, merged_manifest(snap, all_records, rng_states)); });
    } catch (const CommitError& e) {
      // Not committed: its bytes are freed, unless `latest` already names it
      // (its rename went through; only the directory's fsync failed).
      std::error_code ignored;
      if (!e.latest_moved) std::filesystem::remove_all(directory, ignored);
      failure = std::make_exception_ptr(CheckpointError(
          std::string(e.what()) + (e.latest_moved ? "; latest already names " + name + ", which may not survive a crash"
                                                  : "; the previous checkpoint and latest are unchanged")));
    } catch (...) {
      failure = std::current_exception();
      std::error_code ignored;
      std::filesystem::remove_all(directory, ignored);
    }
  }
  agree_on_success(failure, group, timeout, "commit " + directory);
  // After the agreement: the other ranks do not wait for the deletions, and a
  // failure here is a warning, the save stands.
  if (group.rank() == 0) {
    if (snap.has_validation && snap.validation.best()) {
      try {
        write_file_durably(root + "/best", encode_latest(name));
      } catch (const std::exception& e) {
        LOG(WARNING) << "checkpoint " << directory << " is saved, but " << root << "/best could not name it: " << e.what();
      }
    }
    const std::string problem = prune_checkpoints(root, keep, name, snap.lineage_id);
    LOG_IF(WARNING, !problem.empty()) << "checkpoint " << directory
                                      << " is saved, but older ones could not be deleted: " << problem;
  }
}

AsyncCheckpointer::~AsyncCheckpointer() {
  try {
    wait();
  } catch (const std::exception& e) {
    LOG(ERROR) << "the last asynchronous checkpoint failed: " << e.what();
  }
}

void AsyncCheckpointer::save(CheckpointSnapshot live, const std::string& root, int keep) {
  wait();  // one save at a time
  set_copied(false);
  try {
    writer_ = std::thread([this, snap = std::move(live), root, keep]() mutable {
      const auto start = std::chrono::steady_clock::now();
      std::exception_ptr copy_failure;
      try {
        copy_to_staging(snap, staging_);
      } catch (...) {
        copy_failure = std::current_exception();
      }
      set_copied(true);
      try {
        write_checkpoint(snap, root, keep, group_, timeout_, copy_failure);  // every rank learns of a failed copy
      } catch (...) {
        failure_ = std::current_exception();
      }
      last_seconds_ = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    });
  } catch (...) {
    set_copied(true);  // no thread: nothing copies
    throw;
  }
}

void AsyncCheckpointer::set_copied(bool copied) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    copied_ = copied;
  }
  copied_signal_.notify_all();
}

void AsyncCheckpointer::wait_until_copied() {
  std::unique_lock<std::mutex> lock(mutex_);
  copied_signal_.wait(lock, [this] { return copied_; });
}

void AsyncCheckpointer::wait() {
  if (writer_.joinable()) writer_.join();
  if (failure_) {
    std::exception_ptr failure = std::exchange(failure_, nullptr);
    std::rethrow_exception(failure);
  }
}

void CheckpointSaver::save(CheckpointSnapshot snapshot, const std::string& root, int keep, bool async) {
  wait();  // never two saves at once, whatever their kinds
  if (!async) return write_checkpoint(snapshot, root, keep, group_, timeout_);
  if (!async_) async_ = std::make_unique<AsyncCheckpointer>(group_, timeout_);
  async_->save(std::move(snapshot), root, keep);
}

}  // namespace vlm
