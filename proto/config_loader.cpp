#include "proto/config_loader.h"

#include <google/protobuf/io/tokenizer.h>
#include <google/protobuf/text_format.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>

namespace vlm {
namespace {

namespace pb = google::protobuf;

// "lr, min_lr_ratio, ...": the fields a message type has, for hints.
std::string field_list(const pb::Descriptor* type) {
  std::string names;
  for (int i = 0; i < type->field_count(); ++i) names += (i ? ", " : "") + type->field(i)->name();
  return names;
}

// The enum types of the fields named `name` anywhere in `type` (a name such as "kind" may recur).
void enums_of_fields_named(const pb::Descriptor* type, const std::string& name,
                           std::set<const pb::EnumDescriptor*>* found) {
  for (int i = 0; i < type->field_count(); ++i) {
    const pb::FieldDescriptor* field = type->field(i);
    if (field->cpp_type() == pb::FieldDescriptor::CPPTYPE_MESSAGE) {
      enums_of_fields_named(field->message_type(), name, found);
    } else if (field->cpp_type() == pb::FieldDescriptor::CPPTYPE_ENUM && field->name() == name) {
      found->insert(field->enum_type());
    }
  }
}

// Where each field got its value: "file:line:col" or "--set a.b=v".
using Origins = std::map<std::string, std::string>;

class CollectErrors : public pb::io::ErrorCollector {
 public:
  explicit CollectErrors(std::string origin) : origin_(std::move(origin)) {}
#if GOOGLE_PROTOBUF_VERSION >= 4022000
  void RecordError(int line, pb::io::ColumnNumber column, absl::string_view message) override {
    add(line, column, std::string(message));
  }
#else
  void AddError(int line, pb::io::ColumnNumber column, const std::string& message) override {
    add(line, column, message);
  }
#endif
  const std::string& text() const { return text_; }

 private:
  void add(int line, int column, std::string message) {
    const std::string hint = with_field_hint(message) + with_enum_hint(message);
    if (!hint.empty() && !message.empty() && message.back() == '.') message.pop_back();
    if (!text_.empty()) text_ += "\n";
    text_ += origin_ + ":" + std::to_string(line + 1) + ":" + std::to_string(column + 1) + ": " + message + hint;
  }

  // Protobuf says 'Message type "vlm.X" has no field named "y"'; list what X has.
  static std::string with_field_hint(const std::string& message) {
    static const std::regex kUnknown(R"re(Message type "([\w.]+)" has no field named "(\w+)")re");
    std::smatch m;
    if (!std::regex_search(message, m, kUnknown)) return "";
    const pb::Descriptor* type = pb::DescriptorPool::generated_pool()->FindMessageTypeByName(m[1]);
    if (type == nullptr) return "";
    return ". HINT: " + type->name() + " has the fields: " + field_list(type) + " (see proto/config.proto)";
  }

  // Protobuf says 'Unknown enumeration value of "X" for field "y"'; list the values y takes.
  static std::string with_enum_hint(const std::string& message) {
    static const std::regex kUnknown(R"re(Unknown enumeration value of "[^"]*" for field "(\w+)")re");
    std::smatch m;
    if (!std::regex_search(message, m, kUnknown)) return "";
    std::set<const pb::EnumDescriptor*> enums;
    enums_of_fields_named(TrainConfig::descriptor(), m[1], &enums);
    std::string hint;
    for (const pb::EnumDescriptor* type : enums) {
      hint += (hint.empty() ? ". HINT: " : "; ") + type->name() + " takes ";
      for (int i = 0; i < type->value_count(); ++i) hint += (i ? ", " : "") + type->value(i)->name();
    }
    return hint.empty() ? "" : hint + " (see proto/config.proto)";
  }

  std::string origin_;
  std::string text_;
};

void record_origins(const pb::Message& message, const pb::TextFormat::ParseInfoTree& tree,
                    const std::string& prefix, const std::string& origin, Origins* origins) {
  const pb::Reflection* reflection = message.GetReflection();
  std::vector<const pb::FieldDescriptor*> fields;
  reflection->ListFields(message, &fields);
  for (const pb::FieldDescriptor* field : fields) {
    if (field->is_repeated()) continue;  // TrainConfig has no repeated fields yet
    const std::string path = prefix + field->name();
    if (field->cpp_type() == pb::FieldDescriptor::CPPTYPE_MESSAGE) {
      if (const auto* nested = tree.GetTreeForNested(field, -1)) {
        record_origins(reflection->GetMessage(message, field), *nested, path + ".", origin, origins);
      }
      continue;
    }
    const pb::TextFormat::ParseLocation where = tree.GetLocation(field, -1);
    (*origins)[path] = origin + ":" + std::to_string(where.line + 1) + ":" +
                       std::to_string(where.column + 1);
  }
}

void parse_into(const std::string& text, const std::string& origin, TrainConfig* config,
                Origins* origins) {
  CollectErrors errors(origin);
  pb::TextFormat::ParseInfoTree tree;
  pb::TextFormat::Parser parser;
  parser.RecordErrorsTo(&errors);
  parser.WriteLocationsTo(&tree);
  TrainConfig parsed;
  if (!parser.ParseFromString(text, &parsed)) throw ConfigError(errors.text());
  record_origins(parsed, tree, "", origin, origins);
  config->MergeFrom(parsed);
}

// `text` as a text-format string literal: any text, quotes and backslashes included.
std::string text_format_string(const std::string& text) {
  std::string out = "\"";
  for (char c : text) {
    if (c == '"' || c == '\\') out += '\\';
    out += c == '\n' ? std::string("\\n") : std::string(1, c);
  }
  return out + "\"";
}

// Whether `value` holds, outside its string literals, what would end a field's
// message or start another field: '{', '}', ':', '#' or a line break.
bool has_structure_outside_strings(const std::string& value) {
  bool in_string = false;
  for (size_t i = 0; i < value.size(); ++i) {
    const char c = value[i];
    if (in_string) {
      if (c == '\\') ++i;  // an escaped character
      else if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (std::string("{}:#\n").find(c) != std::string::npos) {
      return true;
    }
  }
  return false;
}

// "optim.lr=3e-4" becomes the text "optim { lr: 3e-4 }", checked field by field.
void apply_override(const std::string& assignment, TrainConfig* config, Origins* origins) {
  const std::string origin = "--set " + assignment;
  const size_t eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0) {
    throw ConfigError(origin + ": expected FIELD.PATH=VALUE, for example --set optim.lr=3e-4");
  }
  const std::string path = assignment.substr(0, eq);
  std::string value = assignment.substr(eq + 1);

  const pb::Descriptor* type = TrainConfig::descriptor();
  std::string open, close;
  std::stringstream segments(path);
  std::string name;
  const pb::FieldDescriptor* field = nullptr;
  std::vector<const pb::FieldDescriptor*> enclosing;  // the messages on the way to `field`
  std::string walked;
  while (std::getline(segments, name, '.')) {
    if (field != nullptr) {
      if (field->cpp_type() != pb::FieldDescriptor::CPPTYPE_MESSAGE) {
        throw ConfigError(origin + ": '" + walked + "' is a value, not a message; it has no field '" +
                          name + "'");
      }
      type = field->message_type();
      enclosing.push_back(field);
      open += field->name() + " { ";
      close += " }";
    }
    field = type->FindFieldByName(name);
    walked += (walked.empty() ? "" : ".") + name;
    if (field == nullptr) {
      throw ConfigError(origin + ": unknown field '" + walked + "'. HINT: " + type->name() +
                        " has the fields: " + field_list(type) + " (see proto/config.proto)");
    }
  }
  if (field->cpp_type() == pb::FieldDescriptor::CPPTYPE_MESSAGE) {
    throw ConfigError(origin + ": '" + path + "' is a message; set one of its fields: " +
                      field_list(field->message_type()));
  }
  const bool quoted_or_list = !value.empty() && (value.front() == '"' || (field->is_repeated() && value.front() == '['));
  if (field->cpp_type() == pb::FieldDescriptor::CPPTYPE_STRING && !quoted_or_list) {
    value = text_format_string(value);
  } else if (has_structure_outside_strings(value)) {
    // The value is parsed as text format: it must not close this field's message and set others.
    throw ConfigError(origin + ": a value cannot hold '{', '}', ':', '#' or a line break. HINT: one --set per field");
  }
  CollectErrors errors(origin);
  pb::TextFormat::Parser parser;
  parser.RecordErrorsTo(&errors);
  TrainConfig parsed;
  if (!parser.ParseFromString(open + field->name() + ": " + value + close, &parsed)) {
    // Column numbers point into the generated text, not the command line: drop them.
    std::string text = errors.text();
    text = std::regex_replace(text, std::regex(R"(^--set [^\n]*?:\d+:\d+: )"), origin + ": ");
    throw ConfigError(text);
  }
  if (field->is_repeated()) {  // --set replaces a list (one value, or [a, b]); merging would append to it
    const auto earlier = origins->find(path);
    if (earlier != origins->end() && earlier->second.rfind("--set ", 0) == 0) {
      throw ConfigError(origin + ": " + path + " is a list, already given by " + earlier->second +
                        ", and --set replaces a list. HINT: give all its values at once, --set '" + path +
                        "=[\"a\", \"b\"]' (numbers without quotes)");
    }
    pb::Message* holder = config;
    for (const pb::FieldDescriptor* f : enclosing) holder = holder->GetReflection()->MutableMessage(holder, f);
    holder->GetReflection()->ClearField(holder, field);
  }
  config->MergeFrom(parsed);
  (*origins)[path] = origin;
}

std::string where(const Origins& origins, const std::string& path, const std::string& fallback) {
  auto it = origins.find(path);
  return it != origins.end() ? it->second : fallback + " (default value)";
}

std::string number_text(double v) {
  std::ostringstream out;
  out << v;
  return out.str();
}

// Every numeric field, set or default, must lie inside its (range).
void check_ranges(const pb::Message& message, const std::string& prefix, const Origins& origins,
                  const std::string& file) {
  const pb::Descriptor* type = message.GetDescriptor();
  const pb::Reflection* reflection = message.GetReflection();
  for (int i = 0; i < type->field_count(); ++i) {
    const pb::FieldDescriptor* field = type->field(i);
    const std::string path = prefix + field->name();
    if (field->cpp_type() == pb::FieldDescriptor::CPPTYPE_MESSAGE) {
      check_ranges(reflection->GetMessage(message, field), path + ".", origins, file);
      continue;
    }
    if (!field->options().HasExtension(range)) continue;
    double value = 0;
    switch (field->cpp_type()) {
      case pb::FieldDescriptor::CPPTYPE_INT32: value = reflection->GetInt32(message, field); break;
      case pb::FieldDescriptor::CPPTYPE_INT64: value = static_cast<double>(reflection->GetInt64(message, field)); break;
      case pb::FieldDescriptor::CPPTYPE_FLOAT: value = reflection->GetFloat(message, field); break;
      case pb::FieldDescriptor::CPPTYPE_DOUBLE: value = reflection->GetDouble(message, field); break;
      default: continue;
    }
    const Range& allowed = field->options().GetExtension(range);
    // A float field holds its bound rounded to float (0.01f < 0.01): compare in the field's own precision.
    const bool is_float = field->cpp_type() == pb::FieldDescriptor::CPPTYPE_FLOAT;
    const double min = is_float ? static_cast<float>(allowed.min()) : allowed.min();
    const double max = is_float ? static_cast<float>(allowed.max()) : allowed.max();
    const bool ok = !(value != value) && (!allowed.has_min() || value >= min) && (!allowed.has_max() || value <= max);
    if (!ok) {
      throw ConfigError(where(origins, path, file) + ": " + path + " = " + number_text(value) +
                        " is out of range; allowed [" + number_text(allowed.min()) + ", " +
                        number_text(allowed.max()) + "]");
    }
  }
}

void check_rules(const TrainConfig& c, const Origins& origins, const std::string& file) {
  const ModelConfig& m = c.model();
  if (m.d_model() % m.heads() != 0) {
    throw ConfigError(where(origins, "model.heads", file) + ": model.d_model(" +
                      std::to_string(m.d_model()) + ") must be divisible by model.heads(" +
                      std::to_string(m.heads()) + "); d_model / heads is the head dimension");
  }
  // The patches tile the image the model sees: the task's 28-pixel-high canvas, or the shards' set size.
  const int32_t patch = m.vision().patch_size();
  if (c.data().train_shards().empty()) {
    if (28 % patch != 0) {
      throw ConfigError(where(origins, "model.vision.patch_size", file) + ": model.vision.patch_size(" +
                        std::to_string(patch) + ") must divide the Fashion-MNIST image side 28; use 1, 2, 4, 7, 14 or 28");
    }
  } else {
    const struct {
      const char* field;
      int32_t pixels;
    } sides[] = {{"data.image_height", c.data().image_height()}, {"data.image_width", c.data().image_width()}};
    for (const auto& [field, pixels] : sides) {
      if (pixels % patch == 0) continue;  // 0 (unset) is reported where the shards are opened
      const int32_t below = pixels / patch * patch, above = below + patch;  // the nearest multiples
      throw ConfigError(where(origins, field, file) + ": " + field + "(" + std::to_string(pixels) +
                        ") must be a multiple of model.vision.patch_size(" + std::to_string(patch) +
                        "): the patches tile the image; use " +
                        (below > 0 ? std::to_string(below) + " or " : "") + std::to_string(above));
    }
  }
  if (c.eval().zero_shot_prompt().find("{}") == std::string::npos) {
    throw ConfigError(where(origins, "eval.zero_shot_prompt", file) + ": eval.zero_shot_prompt \"" +
                      c.eval().zero_shot_prompt() + "\" has no {} for the class name, so every class would get the "
                      "same prompt; e.g. \"a photo of {a} {}\"");
  }
  // The contrastive loss ranks each image's caption among the micro-batch's
  // (every rank's, gathered): with one sample its softmax is 1 and the loss 0.
  const LoopConfig& loop = c.loop();
  if (m.contrastive_weight() > 0 && loop.global_batch_size() / loop.micro_batches() < 2) {
    throw ConfigError(where(origins, "loop.global_batch_size", file) + ": loop.global_batch_size(" +
                      std::to_string(loop.global_batch_size()) + ") / loop.micro_batches(" +
                      std::to_string(loop.micro_batches()) + ") leaves fewer than 2 samples per micro-batch; with one, "
                      "the contrastive loss is always 0. HINT: raise loop.global_batch_size to at least 2 x loop.micro_batches, or "
                      "set model.contrastive_weight to 0 to train on captions alone");
  }
  const TokenPruningConfig& pruning = m.vision().token_pruning();
  if (pruning.after_layer() > m.vision().layers()) {
    throw ConfigError(where(origins, "model.vision.token_pruning.after_layer", file) +
                      ": model.vision.token_pruning.after_layer(" + std::to_string(pruning.after_layer()) +
                      ") names a vision block after the last; use 1 to model.vision.layers(" +
                      std::to_string(m.vision().layers()) + ")");
  }
  // One kept-head count per sharing group, each 1..heads (vlm-heads writes them).
  const auto groups = [](int32_t layers, int32_t share) { return share == 0 ? 1 : (layers + share - 1) / share; };
  const struct {
    const char* field;
    const google::protobuf::RepeatedField<int32_t>& kept;
    int32_t groups;
  } kept_heads[] = {
      {"model.kept_heads.vision", m.kept_heads().vision(), groups(m.vision().layers(), m.vision().self_attn_share_group())},
      {"model.kept_heads.text", m.kept_heads().text(),
       groups(m.text().unimodal_layers() + m.text().multimodal_layers(), m.text().self_attn_share_group())},
      {"model.kept_heads.cross", m.kept_heads().cross(), groups(m.text().multimodal_layers(), m.text().cross_kv_share_group())},
  };
  for (const auto& k : kept_heads) {
    if (k.kept.empty()) continue;
    bool ok = k.kept.size() == k.groups;
    for (int32_t n : k.kept) ok = ok && n >= 1 && n <= m.heads();
    if (!ok) {
      throw ConfigError(where(origins, k.field, file) + ": " + k.field + " needs one count per sharing group (" +
                        std::to_string(k.groups) + "), each 1 to model.heads(" + std::to_string(m.heads()) +
                        "); it is written by vlm-heads --remove, leave it empty otherwise");
    }
  }
}

void fill_defaults(pb::Message* message) {
  const pb::Descriptor* type = message->GetDescriptor();
  const pb::Reflection* r = message->GetReflection();
  for (int i = 0; i < type->field_count(); ++i) {
    const pb::FieldDescriptor* f = type->field(i);
    if (f->is_repeated()) continue;
    switch (f->cpp_type()) {
      case pb::FieldDescriptor::CPPTYPE_MESSAGE: fill_defaults(r->MutableMessage(message, f)); break;
      case pb::FieldDescriptor::CPPTYPE_INT32: r->SetInt32(message, f, r->GetInt32(*message, f)); break;
      case pb::FieldDescriptor::CPPTYPE_INT64: r->SetInt64(message, f, r->GetInt64(*message, f)); break;
      case pb::FieldDescriptor::CPPTYPE_UINT32: r->SetUInt32(message, f, r->GetUInt32(*message, f)); break;
      case pb::FieldDescriptor::CPPTYPE_UINT64: r->SetUInt64(message, f, r->GetUInt64(*message, f)); break;
      case pb::FieldDescriptor::CPPTYPE_FLOAT: r->SetFloat(message, f, r->GetFloat(*message, f)); break;
      case pb::FieldDescriptor::CPPTYPE_DOUBLE: r->SetDouble(message, f, r->GetDouble(*message, f)); break;
      case pb::FieldDescriptor::CPPTYPE_BOOL: r->SetBool(message, f, r->GetBool(*message, f)); break;
      case pb::FieldDescriptor::CPPTYPE_ENUM: r->SetEnum(message, f, r->GetEnum(*message, f)); break;
      case pb::FieldDescriptor::CPPTYPE_STRING: r->SetString(message, f, r->GetString(*message, f)); break;
    }
  }
}

}  // namespace

TrainConfig parse_config(const std::string& text, const std::string& origin,
                         const std::vector<std::string>& overrides) {
  TrainConfig config;
  Origins origins;
  parse_into(text, origin, &config, &origins);
  for (const std::string& assignment : overrides) apply_override(assignment, &config, &origins);
  check_ranges(config, "", origins, origin);
  check_rules(config, origins, origin);
  return config;
}

TrainConfig load_config(const std::string& path, const std::vector<std::string>& overrides) {
  if (std::filesystem::is_directory(path)) {
    throw ConfigError(path + ": is a directory, not a config file. HINT: pass --config with a file such as "
                      "configs/fashion_mnist.pbtxt");
  }
  std::ifstream in(path);
  if (!in) {
    throw ConfigError(path + ": cannot open the config file. HINT: pass --config with a path "
                      "such as configs/fashion_mnist.pbtxt");
  }
  std::stringstream text;
  text << in.rdbuf();
  // A file of nothing (or only comments) would silently train on defaults.
  if (!std::regex_search(text.str(), std::regex(R"((^|\n)[ \t]*[^#\s])"))) {
    throw ConfigError(path + ": holds no settings (empty, or only comments): a run on defaults is not what was "
                      "meant. HINT: pass --config with a file such as configs/fashion_mnist.pbtxt");
  }
  return parse_config(text.str(), path, overrides);
}

namespace {

std::string difference_in(const pb::Message& a, const pb::Message& b, const std::string& prefix) {
  const pb::Descriptor* type = a.GetDescriptor();
  const pb::Reflection* ra = a.GetReflection();
  const pb::Reflection* rb = b.GetReflection();
  auto value_text = [](const pb::Message& m, const pb::FieldDescriptor* f, int index) {
    std::string text;
    pb::TextFormat::PrintFieldValueToString(m, f, index, &text);
    return text;
  };
  for (int i = 0; i < type->field_count(); ++i) {
    const pb::FieldDescriptor* field = type->field(i);
    const std::string path = prefix + field->name();
    if (field->is_repeated()) {
      const int na = ra->FieldSize(a, field), nb = rb->FieldSize(b, field);
      std::string ta, tb;
      for (int k = 0; k < na; ++k) ta += (k ? "," : "") + value_text(a, field, k);
      for (int k = 0; k < nb; ++k) tb += (k ? "," : "") + value_text(b, field, k);
      if (ta != tb) return path + ": [" + ta + "] vs [" + tb + "]";
    } else if (field->cpp_type() == pb::FieldDescriptor::CPPTYPE_MESSAGE) {
      const std::string nested = difference_in(ra->GetMessage(a, field), rb->GetMessage(b, field), path + ".");
      if (!nested.empty()) return nested;
    } else {
      const std::string ta = value_text(a, field, -1), tb = value_text(b, field, -1);
      if (ta != tb) return path + ": " + ta + " vs " + tb;
    }
  }
  return "";
}

}  // namespace

std::string first_difference(const TrainConfig& a, const TrainConfig& b) { return difference_in(a, b, ""); }

std::string resolved_config_text(const TrainConfig& config) {
  TrainConfig full = config;
  fill_defaults(&full);
  std::string text;
  pb::TextFormat::PrintToString(full, &text);
  return text;
}

}  // namespace vlm
