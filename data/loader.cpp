#include "data/loader.h"

namespace vlm {

Loader::Loader(const TrainSet& set, DistributedSampler mine, DistributedSampler global, LoaderOptions options)
    : set_(set), mine_(std::move(mine)), global_(std::move(global)), options_(options) {
  for (int t = 0; t < options_.threads; ++t) workers_.emplace_back([this] { work(); });
}

Loader::~Loader() {
  {
    std::lock_guard<std::mutex> hold(mutex_);
    stop_ = true;
  }
  changed_.notify_all();
  for (auto& w : workers_) w.join();
}

Loader::Job Loader::job(int64_t sequence) {
  const int64_t step = sequence / options_.micro_batches;
  const int micro = static_cast<int>(sequence % options_.micro_batches);
  return {mine_.indices(step, micro), global_.indices(step, micro), step / mine_.steps_per_epoch()};
}

LoadedBatch Loader::build(const Job& job) {
  LoadedBatch loaded{set_.batch(job.mine, job.epoch, options_.max_tokens, options_.pinned),
                     set_.caption_counts(job.global, options_.max_tokens)};
  // The global longest, the same on every rank and stage, whatever each found damaged.
  loaded.batch = without_padding(loaded.batch, loaded.global.longest);
  return loaded;
}

void Loader::work() {
  std::unique_lock<std::mutex> lock(mutex_);
  while (true) {
    changed_.wait(lock, [&] { return stop_ || (taken_ >= 0 && next_ < taken_ + options_.depth); });
    if (stop_) return;
    const int64_t sequence = next_++, generation = generation_;
    const Job todo = job(sequence);
    lock.unlock();
    Result result;
    try {
      result.batch = build(todo);
    } catch (...) {
      result.error = std::current_exception();
    }
    lock.lock();
    if (generation == generation_) {
      ready_[sequence] = std::move(result);
      changed_.notify_all();
    }
  }
}

LoadedBatch Loader::get(int64_t step, int micro) {
  const int64_t sequence = step * options_.micro_batches + micro;
  Result result;
  {
    std::unique_lock<std::mutex> lock(mutex_);
    if (sequence != taken_) {  // the first call, or a jump: start over from here
      ++generation_;
      ready_.clear();
      next_ = sequence;
    }
    taken_ = sequence;
    if (workers_.empty()) {
      const Job todo = job(sequence);
      next_ = taken_ = sequence + 1;
      lock.unlock();
      result.batch = build(todo);
    } else {
      changed_.notify_all();
      changed_.wait(lock, [&] { return ready_.count(sequence) > 0; });
      result = std::move(ready_[sequence]);
      ready_.erase(sequence);
      taken_ = sequence + 1;
      changed_.notify_all();
    }
  }
  if (result.error) std::rethrow_exception(result.error);
  return std::move(result.batch);
}

}  // namespace vlm
