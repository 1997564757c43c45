// Writing a checkpoint from a snapshot, synchronously or on a background thread.

#include "trainer/checkpoint_writer.h"

#include <ATen/Parallel.h>
#include <glog/logging.h>

#include "comm/mpi_check.h"

namespace vlm {

void write_checkpoint(const CheckpointSnapshot& snap, const std::string& root, int keep, MPI_Comm world) {
  const std::string directory = root + "/" + step_directory_name(snap.step);
  Manifest manifest;
  if (!snap.parameters.empty()) {
    // Checksums first, in parallel over tensors; then one sequential write.
    std::vector<const torch::Tensor*> order;
    for (const auto& p : snap.parameters) order.push_back(&p.tensor);
    for (const auto& o : snap.optimizer) order.push_back(&o.exp_avg), order.push_back(&o.exp_avg_sq);
    std::vector<uint32_t> crcs(order.size());
    at::parallel_for(0, static_cast<int64_t>(order.size()), 1, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) crcs[i] = tensor_crc(*order[i]);
    });
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
  }
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
  VLM_MPI_CHECK(MPI_Barrier(world));  // every shard is durable before the manifest
  if (rank == 0) {
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
  }
  VLM_MPI_CHECK(MPI_Barrier(world));
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

void AsyncCheckpointer::save(CheckpointSnapshot snapshot, const std::string& root, int keep) {
  wait();  // one save at a time
  writer_ = std::thread([this, snap = std::move(snapshot), root, keep] {
    const auto start = std::chrono::steady_clock::now();
    try {
      write_checkpoint(snap, root, keep, comm_);
    } catch (...) {
      failure_ = std::current_exception();
    }
    last_seconds_ = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  });
}

void AsyncCheckpointer::wait() {
  if (writer_.joinable()) writer_.join();
  if (failure_) {
    std::exception_ptr failure = std::exchange(failure_, nullptr);
    std::rethrow_exception(failure);
  }
}

}  // namespace vlm
