// Writing a checkpoint from a snapshot, synchronously or on a background thread.

#include "trainer/checkpoint_writer.h"

#include <glog/logging.h>

#include <climits>
#include <cstring>

#include "comm/mpi_check.h"
#include "trainer/chunks.h"

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
  if (snap.parameters.empty()) return manifest;
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
    *record->mutable_exp_avg() = shard.append(o.parameter + "#exp_avg", o.exp_avg, crcs[next++]);
    *record->mutable_exp_avg_sq() = shard.append(o.parameter + "#exp_avg_sq", o.exp_avg_sq, crcs[next++]);
  }
  shard.close();
  return manifest;
}

// Collective: every rank learns whether any failed, so none waits forever
// for a failed one. A failed rank rethrows its own error; the others name it.
void agree_on_success(std::exception_ptr failure, MPI_Comm world, const std::string& what) {
  int rank = 0;
  VLM_MPI_CHECK(MPI_Comm_rank(world, &rank));
  int first_failed = failure ? rank : INT_MAX;
  VLM_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &first_failed, 1, MPI_INT, MPI_MIN, world));
  if (failure) std::rethrow_exception(failure);
  if (first_failed != INT_MAX) {
    throw CheckpointError("rank " + std::to_string(first_failed) + " failed to " + what + " (see its error)");
  }
}

}  // namespace

void write_checkpoint(const CheckpointSnapshot& snap, const std::string& root, int keep, MPI_Comm world,
                      std::exception_ptr failed_before) {
  const std::string directory = root + "/" + step_directory_name(snap.step);
  Manifest manifest;
  std::exception_ptr failure = failed_before;
  if (!failure) {
    try {
      manifest = write_shard(snap, directory);
    } catch (...) {
      failure = std::current_exception();
    }
  }
  agree_on_success(failure, world, "write its part of " + directory + "; nothing was committed");
  int rank = 0, size = 1;
  VLM_MPI_CHECK(MPI_Comm_rank(world, &rank));
  VLM_MPI_CHECK(MPI_Comm_size(world, &size));
  // Every rank's RNG state to rank 0 (the states have the same size everywhere).
  const torch::Tensor mine = snap.rng_state.contiguous();
  std::vector<uint8_t> all(rank == 0 ? mine.numel() * size : 0);
  VLM_MPI_CHECK(MPI_Gather(mine.data_ptr(), static_cast<int>(mine.numel()), MPI_BYTE, all.data(),
                           static_cast<int>(mine.numel()), MPI_BYTE, 0, world));
  // Every writer's records to rank 0, which merges them into one manifest.
  std::string records;
  manifest.SerializeToString(&records);
  int length = static_cast<int>(records.size());
  std::vector<int> lengths(rank == 0 ? size : 0), offsets(rank == 0 ? size : 0);
  VLM_MPI_CHECK(MPI_Gather(&length, 1, MPI_INT, lengths.data(), 1, MPI_INT, 0, world));
  std::string gathered;
  if (rank == 0) {
    for (int r = 1; r < size; ++r) offsets[r] = offsets[r - 1] + lengths[r - 1];
    gathered.resize(static_cast<size_t>(offsets.back() + lengths.back()));
  }
  VLM_MPI_CHECK(MPI_Gatherv(records.data(), length, MPI_CHAR, gathered.data(), lengths.data(), offsets.data(), MPI_CHAR,
                            0, world));
  // Every shard is durable (agreed above): rank 0 merges the records and commits.
  auto commit = [&] {
    manifest.Clear();
    for (int r = 0; r < size; ++r) {
      Manifest part;
      if (!part.ParseFromArray(gathered.data() + offsets[r], lengths[r])) throw CheckpointError("corrupt records from rank " + std::to_string(r));
      manifest.MergeFrom(part);
    }
    manifest.set_format_version(kCheckpointFormatVersion);
    manifest.set_step(snap.step);
    manifest.set_consumed_samples(snap.consumed_samples);
    *manifest.mutable_config() = snap.config;
    manifest.mutable_topology()->set_data_parallel(snap.topology.data_parallel);
    manifest.mutable_topology()->set_pipeline_stages(snap.topology.pipeline_stages);
    for (int start : snap.stage_starts) manifest.mutable_topology()->add_stage_starts(start);
    manifest.set_lr_schedule_step(snap.step);
    for (int r = 0; r < size; ++r) {
      RankState* state = manifest.add_ranks();
      state->set_rank(r);
      state->set_torch_rng_state(std::string(all.begin() + r * mine.numel(), all.begin() + (r + 1) * mine.numel()));
    }
    for (int d = 0; d < snap.topology.data_parallel; ++d) {
      DataCursor* cursor = manifest.add_cursors();
      cursor->set_dp_rank(d);
      cursor->set_step(snap.step);
      cursor->set_consumed_samples(snap.consumed_samples);
    }
    *manifest.mutable_kv_cache() = snap.kv_cache;
    commit_checkpoint(root, directory, manifest);
    prune_checkpoints(root, keep);
  };
  if (rank == 0) {
    try {
      commit();
    } catch (...) {
      failure = std::current_exception();
    }
  }
  agree_on_success(failure, world, "commit " + directory);
}

AsyncCheckpointer::AsyncCheckpointer(MPI_Comm world) {
  VLM_MPI_CHECK(MPI_Comm_dup(world, &comm_));  // never interleaves with the training thread's collectives
}

AsyncCheckpointer::~AsyncCheckpointer() {
  try {
    wait();
  } catch (const std::exception& e) {
    LOG(ERROR) << "the last asynchronous checkpoint failed: " << e.what();
  }
  MPI_Comm_free(&comm_);
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
        write_checkpoint(snap, root, keep, comm_, copy_failure);  // every rank learns of a failed copy
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
  if (!async) return write_checkpoint(snapshot, root, keep, MPI_COMM_WORLD);
  if (!async_) async_ = std::make_unique<AsyncCheckpointer>(MPI_COMM_WORLD);
  async_->save(std::move(snapshot), root, keep);
}

}  // namespace vlm
