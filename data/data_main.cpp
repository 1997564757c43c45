// vlm-data: datasets into WebDataset shards, and a look inside shards.
//   vlm-data convert fashion-mnist --out DIR [--split train|test] [--task single|pair|mixed] [--samples N] ...
//   vlm-data convert folder FOLDER --out DIR
//   vlm-data convert coco CAPTIONS.json IMAGES_DIR --out DIR
//   vlm-data inspect [--show N] [--no-decode] SHARDS...
//   vlm-data train-tokenizer --out FILE.model [--vocab N] [--model-type unigram|bpe] SHARDS...

#include <cstdint>
#include <cstdio>
#include <algorithm>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "data/brace.h"
#include "data/convert.h"
#include "data/files.h"
#include "data/inspect.h"
#include "data/sentencepiece_tokenizer.h"
#include "data/shards.h"

namespace vlm {
namespace {

const char* const kUsage =
    "usage:\n"
    "  vlm-data convert fashion-mnist --out DIR [--split train|test] [--task single|pair|mixed]\n"
    "                                 [--samples N] [--seed S] [--fashion-mnist-dir DIR]\n"
    "  vlm-data convert folder FOLDER --out DIR     (FOLDER holds NAME.jpg|jpeg|png + NAME.txt)\n"
    "  vlm-data convert coco CAPTIONS.json IMAGES_DIR --out DIR\n"
    "  vlm-data inspect [--show N] [--no-decode] SHARDS...   (brace patterns: 'd/train-{00000..00005}.tar')\n"
    "  vlm-data train-tokenizer --out FILE.model [--vocab N] [--model-type unigram|bpe] SHARDS...\n"
    "                                 (a SentencePiece model of the shards' captions, for data.tokenizer_model;\n"
    "                                 --vocab 8 to 1048576, default 8000, fewer when the captions hold fewer pieces)\n"
    "convert options: --prefix NAME (shards are DIR/NAME-NNNNN.tar; default: the split for fashion-mnist,\n"
    "                 else 'data'), --shard-samples N (samples per shard, default 10000)\n"
    "inspect exits with status 1 when anything is damaged.\n";

// `--name value` options and the positional arguments, in order.
struct Arguments {
  std::map<std::string, std::string> options;
  std::vector<std::string> positional;

  std::string take(const std::string& name, const std::string& fallback) {
    auto it = options.find(name);
    if (it == options.end()) return fallback;
    std::string value = it->second;
    options.erase(it);
    return value;
  }
  int64_t take_int(const std::string& name, int64_t fallback, int64_t min = INT64_MIN, int64_t max = INT64_MAX) {
    const std::string text = take(name, std::to_string(fallback));
    size_t used = 0;
    int64_t value = 0;
    try {
      value = std::stoll(text, &used);
    } catch (const std::exception&) {
    }
    if (used != text.size() || used == 0) throw std::invalid_argument("--" + name + " needs an integer, not '" + text + "'");
    if (value < min || value > max) {
      throw std::invalid_argument("--" + name + " " + text + " is out of range; allowed [" + std::to_string(min) + ", " +
                                  std::to_string(max) + "]");
    }
    return value;
  }
  void expect_no_more_options() const {
    if (!options.empty()) throw std::invalid_argument("unknown option --" + options.begin()->first);
  }
};

Arguments parse(int argc, char** argv, int first, const std::vector<std::string>& flags) {
  Arguments args;
  for (int i = first; i < argc; ++i) {
    const std::string a = argv[i];
    if (a.rfind("--", 0) != 0) {
      args.positional.push_back(a);
      continue;
    }
    const std::string name = a.substr(2);
    if (std::find(flags.begin(), flags.end(), name) != flags.end()) {
      args.options[name] = "1";
    } else if (i + 1 < argc) {
      args.options[name] = argv[++i];
    } else {
      throw std::invalid_argument("option " + a + " needs a value");
    }
  }
  return args;
}

int convert(int argc, char** argv) {
  const std::string source = argc > 2 ? argv[2] : "";
  if (source != "fashion-mnist" && source != "folder" && source != "coco") {
    std::fprintf(stderr, "%s", kUsage);
    return 2;
  }
  Arguments args = parse(argc, argv, 3, {});
  ConvertOptions options;
  options.out_dir = args.take("out", "");
  if (options.out_dir.empty()) throw std::invalid_argument("convert needs --out DIR, the folder for the shards");
  options.samples_per_shard = args.take_int("shard-samples", options.samples_per_shard, 1, 100000000);
  std::string pattern;
  if (source == "fashion-mnist") {
    FashionSource fashion;
    fashion.split = args.take("split", fashion.split);
    options.prefix = args.take("prefix", fashion.split);
    fashion.task = args.take("task", fashion.task);
    fashion.samples = args.take_int("samples", 0, 0, 100000000);  // data.train_samples' bound; 0: the default
    fashion.seed = args.take_int("seed", fashion.seed);
    fashion.dir = args.take("fashion-mnist-dir", "/usr/share/datasets/fashion-mnist");
    args.expect_no_more_options();
    if (!args.positional.empty()) throw std::invalid_argument("convert fashion-mnist takes no positional argument");
    pattern = convert_fashion_mnist(fashion, options);
  } else if (source == "folder" && args.positional.size() == 1) {
    options.prefix = args.take("prefix", options.prefix);
    args.expect_no_more_options();
    pattern = convert_folder(args.positional[0], options);
  } else if (source == "coco" && args.positional.size() == 2) {
    options.prefix = args.take("prefix", options.prefix);
    args.expect_no_more_options();
    pattern = convert_coco(args.positional[0], args.positional[1], options);
  } else {
    std::fprintf(stderr, "%s", kUsage);
    return 2;
  }
  std::printf("shards: %s\n", pattern.c_str());
  return 0;
}

int inspect(int argc, char** argv) {
  Arguments args = parse(argc, argv, 2, {"no-decode"});
  InspectOptions options;
  options.show = args.take_int("show", options.show, 0);
  options.decode = args.take("no-decode", "") != "1";
  args.expect_no_more_options();
  if (args.positional.empty()) throw std::invalid_argument("inspect needs the shards (paths or brace patterns)");
  return inspect_shards(expand_shard_patterns(args.positional), options) > 0 ? 1 : 0;
}

int train_tokenizer_command(int argc, char** argv) {
  Arguments args = parse(argc, argv, 2, {});
  const std::string out = args.take("out", "");
  TokenizerTraining options;
  // At least 4 special tokens and some pieces; at most what an int32 token id holds.
  options.vocab_size = static_cast<int>(args.take_int("vocab", options.vocab_size, 8, 1 << 20));  // SentencePiece overflows near INT32_MAX
  options.model_type = args.take("model-type", options.model_type);
  args.expect_no_more_options();
  if (out.empty()) throw std::invalid_argument("train-tokenizer needs --out FILE.model");
  if (args.positional.empty()) throw std::invalid_argument("train-tokenizer needs the shards (paths or brace patterns)");
  if (options.model_type != "unigram" && options.model_type != "bpe") {
    throw std::invalid_argument("--model-type must be unigram or bpe, not '" + options.model_type + "'");
  }
  const std::vector<std::string> shards = expand_shard_patterns(args.positional);
  check_not_an_input(out, shards, "shards it reads");
  const ShardSet set = index_shards(shards);
  ShardReader reader(set);
  std::vector<std::string> captions;
  captions.reserve(set.samples.size());
  for (const ShardSample& s : set.samples) {
    try {
      captions.push_back(reader.read(s.shard, s.caption));
    } catch (const std::exception& e) {
      std::fprintf(stderr, "vlm-data: %s key %s: %s: skipped\n", set.paths[s.shard].c_str(), s.key.c_str(), e.what());
      continue;
    }
    if (captions.size() % 100000 == 0) std::fprintf(stderr, "vlm-data: read %zu captions\n", captions.size());
  }
  std::fprintf(stderr, "vlm-data: training a %s tokenizer of up to %d pieces on %zu captions (%zu damaged items)\n",
               options.model_type.c_str(), options.vocab_size, captions.size(), set.damage.size());
  const int vocab = train_tokenizer(captions, options, out);
  const SentencePieceTokenizer tokenizer(out);
  std::printf("tokenizer: %s, %d pieces\n", out.c_str(), vocab);
  if (!captions.empty()) {
    const std::vector<int64_t> ids = tokenizer.encode(captions.front());
    std::printf("  \"%s\" -> %zu tokens -> \"%s\"\n", captions.front().c_str(), ids.size(),
                tokenizer.decode(ids.data(), static_cast<int64_t>(ids.size())).c_str());
  }
  return 0;
}

}  // namespace
}  // namespace vlm

int main(int argc, char** argv) {
  const std::string command = argc > 1 ? argv[1] : "";
  const auto asks_help = [](const std::string& a) { return a == "--help" || a == "-h"; };
  if (std::any_of(argv + 1, argv + argc, asks_help)) {  // vlm-data inspect --help too
    std::printf("%s", vlm::kUsage);
    return 0;
  }
  try {
    if (command == "convert") return vlm::convert(argc, argv);
    if (command == "inspect") return vlm::inspect(argc, argv);
    if (command == "train-tokenizer") return vlm::train_tokenizer_command(argc, argv);
  } catch (const std::invalid_argument& e) {  // the command line or the files it names: running again fails again
    std::fprintf(stderr, "vlm-data %s: error: %s\n", command.c_str(), e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "vlm-data %s: error: %s\n", command.c_str(), e.what());
    return 1;
  }
  std::fprintf(stderr, "%s", vlm::kUsage);
  return 2;
}
