#include "trainer/checkpoint.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <sstream>

#include "trainer/chunks.h"
#include "trainer/crc32c.h"

namespace vlm {
namespace fs = std::filesystem;
namespace {

constexpr uint64_t kMaxManifestBytes = 256ull << 20;

void fsync_path(const std::string& path, bool directory) {
  const int fd = ::open(path.c_str(), directory ? O_RDONLY | O_DIRECTORY : O_RDONLY);
  if (fd < 0 || ::fsync(fd) != 0) {
    if (fd >= 0) ::close(fd);
    throw CheckpointError(path + ": fsync failed: " + std::strerror(errno));
  }
  ::close(fd);
}

// Runs `chunk_crc(item, begin, length)` -> CRC-32C over every chunk of items
// of `lengths` bytes in parallel; returns each item's CRC-32C.
template <typename ChunkCrc>
std::vector<uint32_t> checksum_in_chunks(const std::vector<uint64_t>& lengths, ChunkCrc chunk_crc) {
  const std::vector<Chunk> chunks = split_into_chunks(lengths);
  std::vector<uint32_t> chunk_crcs(chunks.size());
  parallel_over_chunks(chunks, [&](const Chunk& c, size_t index) { chunk_crcs[index] = chunk_crc(c.item, c.begin, c.length); });
  std::vector<uint32_t> crcs(lengths.size(), 0);  // the CRC-32C of no bytes is 0
  for (size_t c = 0; c < chunks.size(); ++c) {
    uint32_t& crc = crcs[chunks[c].item];
    crc = chunks[c].begin == 0 ? chunk_crcs[c] : crc32c_combine(crc, chunk_crcs[c], chunks[c].length);
  }
  return crcs;
}

// Shard files opened once per read, closed on the way out.
class OpenFiles {
 public:
  struct File {
    std::string path;
    int fd;
    uint64_t size;
  };
  OpenFiles() = default;
  OpenFiles(const OpenFiles&) = delete;
  OpenFiles& operator=(const OpenFiles&) = delete;
  ~OpenFiles() {
    for (const auto& [path, file] : files_) ::close(file.fd);
  }
  const File& open(const std::string& path, const std::string& needed_by) {
    auto it = files_.find(path);
    if (it != files_.end()) return it->second;
    const int fd = ::open(path.c_str(), O_RDONLY);
    if (fd < 0) {
      throw CheckpointError(path + (errno == ENOENT ? ": missing shard (needed by " + needed_by + ")"
                                                    : ": cannot open: " + std::string(std::strerror(errno))));
    }
    struct stat status {};
    ::fstat(fd, &status);
    return files_.emplace(path, File{path, fd, static_cast<uint64_t>(status.st_size)}).first->second;
  }

 private:
  std::map<std::string, File> files_;
};

// Writes `data` to `path` through a temporary file and an atomic rename, all fsynced.
void write_atomically(const std::string& path, const std::string& data) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out.write(data.data(), static_cast<std::streamsize>(data.size()));
    if (!out.good()) throw CheckpointError(tmp + ": write failed");
  }
  fsync_path(tmp, false);
  if (std::rename(tmp.c_str(), path.c_str()) != 0) throw CheckpointError(path + ": rename failed: " + std::strerror(errno));
  fsync_path(fs::path(path).parent_path().string(), true);
}

void check_format_version(int version, const std::string& path) {
  if (version > kCheckpointFormatVersion) {
    throw CheckpointError(path + ": format version " + std::to_string(version) + " is newer than this vlmtrain reads (" +
                          std::to_string(kCheckpointFormatVersion) + "). HINT: use a newer vlmtrain");
  }
  if (version < kCheckpointFormatVersion) {  // version 1 (pre-release) had zlib CRC-32 checksums
    throw CheckpointError(path + ": format version " + std::to_string(version) + " predates CRC-32C checksums (" +
                          std::to_string(kCheckpointFormatVersion) + ") and this vlmtrain cannot verify it. " +
                          "HINT: train again, or resume it with the pre-release build that wrote it");
  }
}

bool valid_shard_name(const std::string& name) {
  static const std::regex kShard(R"(shard-\d{5}\.bin)");
  return std::regex_match(name, kShard);
}

}  // namespace

std::string step_directory_name(int64_t step) {
  char name[32];
  std::snprintf(name, sizeof name, "step-%08lld", static_cast<long long>(step));
  return name;
}

ShardWriter::ShardWriter(const std::string& step_directory, const std::string& shard_name)
    : path_(step_directory + "/" + shard_name), shard_(shard_name) {
  fs::create_directories(step_directory);
  file_ = std::fopen(path_.c_str(), "wb");
  if (file_ == nullptr) throw CheckpointError(path_ + ": cannot create: " + std::strerror(errno));
}

ShardWriter::~ShardWriter() {
  if (file_ != nullptr) std::fclose(file_);
}

std::vector<uint32_t> checksum_tensors(const std::vector<const torch::Tensor*>& tensors) {
  std::vector<uint64_t> lengths;
  for (const torch::Tensor* t : tensors) {
    TORCH_CHECK(t->is_contiguous() && t->device().is_cpu(), "checksum_tensors: needs contiguous CPU tensors");
    lengths.push_back(t->nbytes());
  }
  return checksum_in_chunks(lengths, [&](size_t i, uint64_t begin, uint64_t length) {
    return crc32c(static_cast<const char*>(tensors[i]->data_ptr()) + begin, length);
  });
}

TensorRecord ShardWriter::append(const std::string& name, const torch::Tensor& tensor, uint32_t crc) {
  // The bytes written must be the bytes checksummed: no conversion here (make_snapshot does it).
  if (tensor.scalar_type() != torch::kFloat) throw CheckpointError(name + ": only float32 tensors are checkpointed");
  TORCH_CHECK(tensor.device().is_cpu() && tensor.is_contiguous(), name, ": ShardWriter takes contiguous host tensors");
  TensorRecord record;
  record.set_name(name);
  record.set_dtype("float32");
  for (int64_t d : tensor.sizes()) record.add_shape(d);
  record.set_shard(shard_);
  record.set_offset(offset_);
  record.set_length(tensor.nbytes());
  record.set_crc32c(crc);
  if (std::fwrite(tensor.data_ptr(), 1, tensor.nbytes(), file_) != tensor.nbytes()) {
    throw CheckpointError(path_ + ": write failed: " + std::strerror(errno));
  }
  offset_ += tensor.nbytes();
  return record;
}

void ShardWriter::close() {
  if (std::fflush(file_) != 0 || ::fsync(fileno(file_)) != 0) throw CheckpointError(path_ + ": flush failed");
  std::fclose(file_);
  file_ = nullptr;
}

void commit_checkpoint(const std::string& root, const std::string& step_directory, const Manifest& manifest) {
  std::string bytes;
  if (!manifest.SerializeToString(&bytes)) throw CheckpointError(step_directory + ": cannot serialize the manifest");
  fsync_path(step_directory, true);  // the shard files' names are durable
  write_atomically(step_directory + "/manifest.pb", bytes);
  write_atomically(root + "/latest", fs::path(step_directory).filename().string() + "\n");
}

void prune_checkpoints(const std::string& root, int keep) {
  std::vector<fs::path> complete, incomplete;
  static const std::regex kStep(R"(step-\d{8})");
  for (const auto& entry : fs::directory_iterator(root)) {
    if (!entry.is_directory() || !std::regex_match(entry.path().filename().string(), kStep)) continue;
    (fs::exists(entry.path() / "manifest.pb") ? complete : incomplete).push_back(entry.path());
  }
  std::sort(complete.begin(), complete.end());
  for (size_t i = 0; i + keep < complete.size(); ++i) fs::remove_all(complete[i]);
  for (const auto& dir : incomplete) {
    if (!complete.empty() && dir < complete.back()) fs::remove_all(dir);  // left by a crash mid-save
  }
}

std::string resolve_checkpoint(const std::string& root, const std::string& which) {
  if (which != "latest") return which;
  std::ifstream in(root + "/latest");
  std::string name;
  if (!(in >> name)) {
    throw CheckpointError(root + "/latest: no checkpoint to resume from. HINT: check checkpoint.dir, or pass --resume PATH");
  }
  static const std::regex kStep(R"(step-\d{8})");
  if (!std::regex_match(name, kStep)) throw CheckpointError(root + "/latest: '" + name + "' is not a step directory name");
  return root + "/" + name;
}

namespace {
constexpr char kExportMagic[8] = {'V', 'L', 'M', 'M', 'O', 'D', 'E', 'L'};
constexpr uint64_t kExportHeader = 24;  // magic, version byte + padding, manifest length
}  // namespace

void export_model(const std::string& step_directory, const std::string& out_file) {
  const CheckpointReader reader(step_directory);
  Manifest model = reader.manifest();
  model.clear_optimizer();
  model.clear_ranks();
  model.clear_cursors();
  std::vector<std::pair<const TensorRecord*, torch::Tensor>> reads;
  for (const TensorRecord& r : reader.manifest().tensors()) {
    reads.emplace_back(&r, torch::empty(std::vector<int64_t>(r.shape().begin(), r.shape().end())));
  }
  reader.read_all(reads);  // verified on the way out
  uint64_t offset = 0;
  for (TensorRecord& r : *model.mutable_tensors()) {
    r.clear_shard();
    r.set_offset(offset);
    offset += r.length();
  }
  std::string manifest;
  model.SerializeToString(&manifest);
  std::string header(kExportMagic, 8);
  header += static_cast<char>(kCheckpointFormatVersion);
  header += std::string(7, '\0');
  const uint64_t length = manifest.size();
  for (int i = 0; i < 8; ++i) header += static_cast<char>((length >> (8 * i)) & 0xff);
  const std::string tmp = out_file + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out.write(header.data(), static_cast<std::streamsize>(header.size()));
    out.write(manifest.data(), static_cast<std::streamsize>(manifest.size()));
    for (const auto& [r, t] : reads) out.write(static_cast<const char*>(t.data_ptr()), static_cast<std::streamsize>(t.nbytes()));
    if (!out.good()) throw CheckpointError(tmp + ": write failed");
  }
  fsync_path(tmp, false);
  if (std::rename(tmp.c_str(), out_file.c_str()) != 0) throw CheckpointError(out_file + ": rename failed");
}

CheckpointReader::CheckpointReader(const std::string& step_directory) : directory_(step_directory) {
  if (fs::is_regular_file(step_directory)) {  // an exported model
    exported_file_ = step_directory;
    std::ifstream in(step_directory, std::ios::binary);
    char header[kExportHeader];
    if (!in.read(header, kExportHeader) || std::memcmp(header, kExportMagic, 8) != 0) {
      throw CheckpointError(step_directory + ": not a vlmtrain model file (no VLMMODEL header)");
    }
    check_format_version(header[8], step_directory);
    uint64_t length = 0;
    for (int i = 0; i < 8; ++i) length |= static_cast<uint64_t>(static_cast<uint8_t>(header[16 + i])) << (8 * i);
    if (length > kMaxManifestBytes || length > fs::file_size(step_directory)) {
      throw CheckpointError(step_directory + ": implausible manifest length " + std::to_string(length));
    }
    std::string bytes(length, '\0');
    in.read(bytes.data(), static_cast<std::streamsize>(length));
    if (!in.good() || !manifest_.ParseFromString(bytes)) throw CheckpointError(step_directory + ": corrupt manifest");
    data_start_ = kExportHeader + length;
    return;
  }
  const std::string path = step_directory + "/manifest.pb";
  std::error_code error;
  const uint64_t size = fs::file_size(path, error);
  if (error) {
    throw CheckpointError(path + ": missing: " + step_directory +
                          " is not a complete checkpoint (a save that did not finish). HINT: resume from 'latest'");
  }
  if (size > kMaxManifestBytes) throw CheckpointError(path + ": " + std::to_string(size) + " bytes is implausibly large");
  std::ifstream in(path, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (!manifest_.ParseFromString(bytes)) throw CheckpointError(path + ": not a valid manifest (corrupt or truncated)");
  check_format_version(manifest_.format_version(), path);
}

void CheckpointReader::read(const TensorRecord& record, torch::Tensor target) const { read_all({{&record, target}}); }

int64_t CheckpointReader::verify_all() const {
  std::vector<const TensorRecord*> records;
  for (const auto& r : manifest_.tensors()) records.push_back(&r);
  for (const auto& o : manifest_.optimizer()) records.push_back(&o.exp_avg()), records.push_back(&o.exp_avg_sq());
  std::vector<std::pair<const TensorRecord*, torch::Tensor>> reads;
  int64_t bytes = 0;
  for (const TensorRecord* r : records) {
    reads.emplace_back(r, torch::empty(std::vector<int64_t>(r->shape().begin(), r->shape().end())));
    bytes += static_cast<int64_t>(r->length());
  }
  read_all(reads);
  return bytes;
}

void CheckpointReader::check_record(const TensorRecord& r, const torch::Tensor& target) const {
  const std::string what = directory_ + ": tensor '" + r.name() + "'";
  if (r.dtype() != "float32") throw CheckpointError(what + ": dtype '" + r.dtype() + "', expected float32");
  if (exported_file_.empty() && !valid_shard_name(r.shard())) {
    throw CheckpointError(what + ": invalid shard name '" + r.shard() + "'");
  }
  std::vector<int64_t> shape(r.shape().begin(), r.shape().end());
  if (torch::IntArrayRef(shape) != target.sizes()) {
    std::ostringstream message;
    message << what << ": shape " << torch::IntArrayRef(shape) << " but the model has " << target.sizes();
    throw CheckpointError(message.str());
  }
  if (r.length() != static_cast<uint64_t>(target.nbytes())) throw CheckpointError(what + ": length does not match its shape");
}

void CheckpointReader::read_all(const std::vector<std::pair<const TensorRecord*, torch::Tensor>>& reads) const {
  // Every record is checked and every shard opened (once) before a byte is read.
  OpenFiles files;
  std::vector<const OpenFiles::File*> sources;
  std::vector<uint64_t> lengths;
  for (const auto& [r, target] : reads) {
    check_record(*r, target);
    const OpenFiles::File& file = files.open(exported_file_.empty() ? directory_ + "/" + r->shard() : exported_file_, r->name());
    const uint64_t size = file.size > data_start_ ? file.size - data_start_ : 0;
    if (r->offset() > size || r->length() > size - r->offset()) {
      throw CheckpointError(file.path + ": truncated: " + r->name() + " needs bytes [" + std::to_string(r->offset()) +
                            ", " + std::to_string(r->offset() + r->length()) + ") of a " + std::to_string(size) +
                            "-byte file");
    }
    sources.push_back(&file);
    lengths.push_back(r->length());
  }
  // Straight into the destination when it is contiguous. A damaged tensor
  // throws, and a failed load is never trained on (vlm-train stops).
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> destinations;
  for (const auto& [r, target] : reads) {
    destinations.push_back(target.is_contiguous() ? target : torch::empty_like(target, torch::MemoryFormat::Contiguous));
  }
  const std::vector<uint32_t> crcs = checksum_in_chunks(lengths, [&](size_t i, uint64_t begin, uint64_t length) {
    char* out = static_cast<char*>(destinations[i].data_ptr()) + begin;
    const TensorRecord& r = *reads[i].first;
    uint64_t done = 0;
    while (done < length) {
      const ssize_t n = ::pread(sources[i]->fd, out + done, length - done,
                                static_cast<off_t>(data_start_ + r.offset() + begin + done));
      if (n <= 0) throw CheckpointError(sources[i]->path + ": read failed for " + r.name());
      done += static_cast<uint64_t>(n);
    }
    return crc32c(out, length);  // while the chunk is in cache
  });
  for (size_t i = 0; i < reads.size(); ++i) {
    if (crcs[i] != reads[i].first->crc32c()) {
      throw CheckpointError(sources[i]->path + ": checksum mismatch for " + reads[i].first->name() +
                            ": the shard is damaged");
    }
    if (!reads[i].second.is_contiguous()) reads[i].second.copy_(destinations[i]);  // read into a temporary
  }
}

KvCacheLayout kv_cache_layout(const ModelSpec& s) {
  KvCacheLayout layout;
  const int64_t per_token = 2 * s.d_model * 4;  // K and V, float32
  layout.set_image_tokens(s.image_tokens());
  layout.set_max_tokens(s.max_tokens);
  int64_t token_bytes = 0, image_bytes = 0;
  for (int64_t i = 0; i < s.text_layers(); ++i) {
    LayerKvCache* layer = layout.add_layers();
    const int64_t m = i - s.unimodal_layers;
    layer->set_layer(static_cast<int32_t>(i));
    layer->set_multimodal(m >= 0);
    layer->set_self_kv_layer(static_cast<int32_t>(i));
    layer->set_self_attn_weight_group(static_cast<int32_t>(ModelSpec::share_group_of(i, s.text_self_attn_share)));
    layer->set_heads(static_cast<int32_t>(s.heads));
    layer->set_head_dim(static_cast<int32_t>(s.head_dim()));
    layer->set_dtype("float32");
    layer->set_self_kv_bytes_per_token(per_token);
    token_bytes += per_token;
    if (m < 0) {
      layer->set_cross_kv_layer(-1);
      layer->set_cross_kv_bytes_per_image(0);
      continue;
    }
    const int64_t group = ModelSpec::share_group_of(m, s.cross_kv_share);
    const int64_t first = s.cross_kv_share == 0 ? 0 : group * s.cross_kv_share;
    const int64_t source = s.reuse_image_kv ? first : m;
    layer->set_cross_kv_layer(static_cast<int32_t>(s.unimodal_layers + source));
    const int64_t bytes = source == m ? per_token * s.image_tokens() : 0;
    layer->set_cross_kv_bytes_per_image(bytes);
    image_bytes += bytes;
  }
  layout.set_bytes_per_token(token_bytes);
  layout.set_bytes_per_image(image_bytes);
  return layout;
}

}  // namespace vlm
