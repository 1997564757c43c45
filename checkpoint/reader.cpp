#include "checkpoint/reader.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <sstream>

#include "checkpoint/chunks.h"
#include "checkpoint/crc32c.h"
#include "checkpoint/durable_file.h"

namespace vlm {
namespace fs = std::filesystem;
namespace {

constexpr char kExportMagic[8] = {'V', 'L', 'M', 'M', 'O', 'D', 'E', 'L'};
constexpr uint64_t kExportHeader = 24;  // magic, version byte + 7 zero bytes, manifest length
constexpr uint64_t kMaxManifestBytes = 256ull << 20;

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
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
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

bool valid_shard_name(const std::string& name) {
  static const std::regex kShard(R"(shard-\d{5}\.bin)");
  return std::regex_match(name, kShard);
}

std::vector<const TensorRecord*> every_record(const Manifest& m) {
  std::vector<const TensorRecord*> records;
  for (const auto& r : m.tensors()) records.push_back(&r);
  for (const auto& o : m.optimizer()) records.push_back(&o.exp_avg()), records.push_back(&o.exp_avg_sq());
  return records;
}

std::string read_manifest_file(const std::string& path, const std::string& step_directory) {
  std::error_code error;
  const uint64_t size = fs::file_size(path, error);
  if (error && !fs::exists(step_directory)) {
    throw CheckpointError(step_directory + ": does not exist. HINT: pass a step directory (ROOT/step-NNNNNNNN), a "
                          "checkpoint root, its latest or best file, or an exported .vlm file");
  }
  if (error && step_of_directory_name(fs::path(step_directory).lexically_normal().filename().string()) < 0) {
    throw CheckpointError(step_directory + ": not a checkpoint (no manifest.pb, no latest). HINT: pass a step directory "
                          "(ROOT/step-NNNNNNNN), a checkpoint root, its latest or best file, or an exported .vlm file");
  }
  if (error) {
    throw CheckpointError(path + ": missing: " + step_directory +
                          " is not a complete checkpoint (a save that did not finish). HINT: resume from 'latest'");
  }
  if (size > kMaxManifestBytes) throw CheckpointError(path + ": " + std::to_string(size) + " bytes is implausibly large");
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

}  // namespace

void write_model_file(Manifest model, const std::vector<torch::Tensor>& tensors, const std::string& out_file) {
  if (static_cast<size_t>(model.tensors_size()) != tensors.size()) {
    throw CheckpointError(out_file + ": " + std::to_string(model.tensors_size()) + " records for " +
                          std::to_string(tensors.size()) + " tensors");
  }
  model.clear_optimizer();  // the model alone
  model.clear_ranks();
  model.clear_cursors();
  model.set_format_version(kCheckpointFormatVersion);
  uint64_t offset = 0;
  for (TensorRecord& r : *model.mutable_tensors()) {
    r.clear_shard();
    r.set_offset(offset);
    offset += r.length();
  }
  const std::string manifest = encode_manifest(model);
  std::string header(kExportMagic, 8);
  header += static_cast<char>(kCheckpointFormatVersion);
  header += std::string(7, '\0');
  for (int i = 0; i < 8; ++i) header += static_cast<char>((static_cast<uint64_t>(manifest.size()) >> (8 * i)) & 0xff);
  DurableFile out(out_file);
  out.append(header.data(), header.size());
  out.append(manifest.data(), manifest.size());
  for (const torch::Tensor& t : tensors) out.append(t.data_ptr(), t.nbytes());
  out.commit();
}

void export_model(const std::string& step_directory, const std::string& out_file) {
  const CheckpointReader reader(step_directory);
  std::vector<torch::Tensor> tensors;
  for (const auto& [r, t] : reader.read_parameters()) tensors.push_back(t);  // verified on the way out
  write_model_file(reader.manifest(), tensors, out_file);
}

CheckpointReader::CheckpointReader(const std::string& step_directory) : directory_(step_directory) {
  if (fs::is_regular_file(step_directory)) {  // an exported model
    exported_file_ = step_directory;
    std::ifstream in(step_directory, std::ios::binary);
    char header[kExportHeader];
    if (!in.read(header, kExportHeader) || std::memcmp(header, kExportMagic, 8) != 0) {
      throw CheckpointError(step_directory + ": not a vlmtrain model file (no VLMMODEL header)");
    }
    const int version = static_cast<uint8_t>(header[8]);
    for (int i = 9; i < 16; ++i) {
      if (header[i] != 0) throw CheckpointError(step_directory + ": damaged model file header");
    }
    if (version < kOldestReadableFormatVersion || version > kCheckpointFormatVersion) {
      throw CheckpointError(step_directory + ": model file format version " + std::to_string(version) +
                            (version > kCheckpointFormatVersion ? " is newer than this vlmtrain reads" : " is damaged or too old"));
    }
    uint64_t length = 0;
    for (int i = 0; i < 8; ++i) length |= static_cast<uint64_t>(static_cast<uint8_t>(header[16 + i])) << (8 * i);
    if (length > kMaxManifestBytes || length > fs::file_size(step_directory)) {
      throw CheckpointError(step_directory + ": implausible manifest length " + std::to_string(length));
    }
    std::string bytes(length, '\0');
    in.read(bytes.data(), static_cast<std::streamsize>(length));
    if (!in.good()) throw CheckpointError(step_directory + ": truncated manifest");
    manifest_ = decode_manifest(bytes, step_directory);
    if (manifest_.format_version() != version) {
      throw CheckpointError(step_directory + ": damaged model file (its header and manifest disagree on the version)");
    }
    data_start_ = kExportHeader + length;
    check_shapes();
    return;
  }
  const std::string path = step_directory + "/manifest.pb";
  manifest_ = decode_manifest(read_manifest_file(path, step_directory), path);
  const int64_t named_step = step_of_directory_name(fs::path(step_directory).lexically_normal().filename().string());
  if (named_step >= 0 && named_step != manifest_.step()) {
    throw CheckpointError(path + ": the manifest is for step " + std::to_string(manifest_.step()) +
                          ", not the step its directory names (" + std::to_string(named_step) + ")");
  }
  check_shapes();
}

void CheckpointReader::check_shapes() const {
  for (const TensorRecord* r : every_record(manifest_)) {
    uint64_t elements = 1;
    bool valid = true;
    for (int64_t d : r->shape()) {
      valid = valid && d >= 0 && (d == 0 || elements <= UINT64_MAX / 4 / static_cast<uint64_t>(d));
      if (valid) elements *= static_cast<uint64_t>(d);
    }
    if (!valid || elements * 4 != r->length()) {
      std::string shape;
      for (int64_t d : r->shape()) shape += (shape.empty() ? "" : ", ") + std::to_string(d);
      throw CheckpointError(directory_ + ": tensor '" + r->name() + "': shape [" + shape + "] does not fit its " +
                            std::to_string(r->length()) + " bytes of float32: the manifest is damaged or was not "
                            "written by vlmtrain");
    }
  }
}

void CheckpointReader::read(const TensorRecord& record, torch::Tensor target) const { read_all({{&record, target}}); }

std::vector<std::pair<const TensorRecord*, torch::Tensor>> CheckpointReader::read_parameters() const {
  std::vector<std::pair<const TensorRecord*, torch::Tensor>> reads;
  for (const TensorRecord& r : manifest_.tensors()) {
    reads.emplace_back(&r, torch::empty(std::vector<int64_t>(r.shape().begin(), r.shape().end())));
  }
  read_all(reads);
  return reads;
}

int64_t CheckpointReader::verify_all() const {
  std::vector<std::pair<const TensorRecord*, torch::Tensor>> reads;
  std::map<std::string, uint64_t> shard_bytes;  // what the records cover, per file
  int64_t bytes = 0;
  for (const TensorRecord* r : every_record(manifest_)) {
    reads.emplace_back(r, torch::empty(std::vector<int64_t>(r->shape().begin(), r->shape().end())));
    bytes += static_cast<int64_t>(r->length());
    shard_bytes[exported_file_.empty() ? directory_ + "/" + r->shard() : exported_file_] += r->length();
  }
  read_all(reads);
  // Bytes no record covers are damage too (a record's offset could point past them).
  for (const auto& [path, covered] : shard_bytes) {
    const uint64_t size = fs::file_size(path) - (exported_file_.empty() ? 0 : data_start_);
    if (size != covered) {
      throw CheckpointError(path + ": " + std::to_string(size) + " bytes of tensors, but the manifest's records cover " +
                            std::to_string(covered) + ": damaged or not this checkpoint's shard");
    }
  }
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
  // Its length matches the shape: check_shapes() saw to that when the manifest was read.
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
      throw CheckpointError(file.path + ": truncated: " + r->name() + " needs " + std::to_string(r->length()) +
                            " bytes from offset " + std::to_string(r->offset()) + " of a " + std::to_string(size) +
                            "-byte file");
    }
    sources.push_back(&file);
    lengths.push_back(r->length());
  }
  // Straight into the destination when it is contiguous host memory; else
  // (a GPU's, or strided) through a host temporary. A damaged tensor throws,
  // and a failed load is never trained on (vlm-train stops).
  torch::NoGradGuard no_grad;
  auto direct = [](const torch::Tensor& t) { return t.is_contiguous() && t.device().is_cpu(); };
  std::vector<torch::Tensor> destinations;
  for (const auto& [r, target] : reads) {
    destinations.push_back(direct(target) ? target : torch::empty(target.sizes(), target.options().device(torch::kCPU)));
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
    if (!direct(reads[i].second)) reads[i].second.copy_(destinations[i]);  // read into a temporary
  }
}

}  // namespace vlm
