#include "trainer/checkpoint.h"

#include <fcntl.h>
#include <unistd.h>
#include <zlib.h>

#include <ATen/Parallel.h>
#include <cstring>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

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

uint32_t crc_of(const void* data, uint64_t length) {
  uLong crc = crc32(0L, Z_NULL, 0);
  const auto* bytes = static_cast<const Bytef*>(data);
  while (length > 0) {
    const uInt chunk = static_cast<uInt>(std::min<uint64_t>(length, 1u << 30));
    crc = crc32(crc, bytes, chunk);
    bytes += chunk;
    length -= chunk;
  }
  return static_cast<uint32_t>(crc);
}

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

uint32_t tensor_crc(const torch::Tensor& tensor) {
  const torch::Tensor t = tensor.contiguous();
  return crc_of(t.data_ptr(), t.nbytes());
}

TensorRecord ShardWriter::append(const std::string& name, const torch::Tensor& tensor, std::optional<uint32_t> crc) {
  torch::Tensor t = tensor.detach().to(torch::kCPU).contiguous();
  if (t.scalar_type() != torch::kFloat) throw CheckpointError(name + ": only float32 tensors are checkpointed");
  TensorRecord record;
  record.set_name(name);
  record.set_dtype("float32");
  for (int64_t d : t.sizes()) record.add_shape(d);
  record.set_shard(shard_);
  record.set_offset(offset_);
  record.set_length(t.nbytes());
  record.set_crc32(crc ? *crc : crc_of(t.data_ptr(), t.nbytes()));
  if (std::fwrite(t.data_ptr(), 1, t.nbytes(), file_) != t.nbytes()) {
    throw CheckpointError(path_ + ": write failed: " + std::strerror(errno));
  }
  offset_ += t.nbytes();
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
  std::vector<torch::Tensor> tensors;
  uint64_t offset = 0;
  for (TensorRecord& r : *model.mutable_tensors()) {
    torch::Tensor t = torch::empty(std::vector<int64_t>(r.shape().begin(), r.shape().end()));
    reader.read(r, t);  // verified on the way out
    tensors.push_back(t);
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
    for (const auto& t : tensors) out.write(static_cast<const char*>(t.data_ptr()), static_cast<std::streamsize>(t.nbytes()));
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
    if (header[8] > kCheckpointFormatVersion) {
      throw CheckpointError(step_directory + ": format version " + std::to_string(header[8]) +
                            " is newer than this vlmtrain reads (" + std::to_string(kCheckpointFormatVersion) + ")");
    }
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
  if (manifest_.format_version() > kCheckpointFormatVersion) {
    throw CheckpointError(path + ": format version " + std::to_string(manifest_.format_version()) +
                          " is newer than this vlmtrain reads (" + std::to_string(kCheckpointFormatVersion) +
                          "). HINT: use a newer vlmtrain");
  }
}

void CheckpointReader::read(const TensorRecord& r, torch::Tensor target) const {
  const std::string what = directory_ + ": tensor '" + r.name() + "'";
  if (r.dtype() != "float32") throw CheckpointError(what + ": dtype '" + r.dtype() + "', expected float32");
  const bool exported = !exported_file_.empty();
  if (!exported && !valid_shard_name(r.shard())) throw CheckpointError(what + ": invalid shard name '" + r.shard() + "'");
  std::vector<int64_t> shape(r.shape().begin(), r.shape().end());
  if (torch::IntArrayRef(shape) != target.sizes()) {
    std::ostringstream message;
    message << what << ": shape " << torch::IntArrayRef(shape) << " but the model has " << target.sizes();
    throw CheckpointError(message.str());
  }
  if (r.length() != static_cast<uint64_t>(target.nbytes())) throw CheckpointError(what + ": length does not match its shape");
  const std::string path = exported ? exported_file_ : directory_ + "/" + r.shard();
  std::error_code error;
  const uint64_t file_size = fs::file_size(path, error);
  if (error) throw CheckpointError(path + ": missing shard (needed by " + r.name() + ")");
  const uint64_t size = exported ? (file_size > data_start_ ? file_size - data_start_ : 0) : file_size;
  if (r.offset() > size || r.length() > size - r.offset()) {
    throw CheckpointError(path + ": truncated: " + r.name() + " needs bytes [" + std::to_string(r.offset()) + ", " +
                          std::to_string(r.offset() + r.length()) + ") of a " + std::to_string(size) + "-byte file");
  }
  // Read straight into the destination when it is contiguous; a damaged tensor
  // throws, and a failed load is never trained on (vlm-train stops).
  torch::NoGradGuard no_grad;
  torch::Tensor destination = target.is_contiguous() ? target.detach() : torch::empty_like(target, torch::MemoryFormat::Contiguous);
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) throw CheckpointError(path + ": cannot open: " + std::strerror(errno));
  auto* out = static_cast<char*>(destination.data_ptr());
  uint64_t done = 0;
  while (done < r.length()) {
    const ssize_t n = ::pread(fd, out + done, r.length() - done, static_cast<off_t>(data_start_ + r.offset() + done));
    if (n <= 0) break;
    done += static_cast<uint64_t>(n);
  }
  ::close(fd);
  if (done != r.length()) throw CheckpointError(path + ": read failed for " + r.name());
  if (crc_of(out, r.length()) != r.crc32()) {
    throw CheckpointError(path + ": checksum mismatch for " + r.name() + ": the shard is damaged");
  }
  if (!destination.is_same(target)) target.copy_(destination);
}

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

void CheckpointReader::read_all(const std::vector<std::pair<const TensorRecord*, torch::Tensor>>& reads) const {
  // Independent tensors: read and checksum them on ATen's threads.
  at::parallel_for(0, static_cast<int64_t>(reads.size()), 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) read(*reads[i].first, reads[i].second);
  });
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
