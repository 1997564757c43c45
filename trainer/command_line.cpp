#include "trainer/command_line.h"

namespace vlm {

const char* const kTrainUsage =
    "usage: vlm-train --config FILE.pbtxt [--set field.path=value ...] [--resume auto|latest|best|DIR]\n"
    "                 [--init-from CHECKPOINT|MODEL.vlm]\n"
    "\n"
    "Trains the vision-language model; run one process per rank under mpirun or srun:\n"
    "  mpirun -np 2 build/trainer/vlm-train --config configs/fashion_mnist.pbtxt --set optim.lr=3e-4\n"
    "\n"
    "  --config FILE   experiment config in protobuf text format (fields: proto/config.proto)\n"
    "  --set F=V       override one field, e.g. --set loop.steps=100 --set data.task=PAIR\n"
    "  --resume W      continue from checkpoint.dir/latest (latest), from step directory W, or\n"
    "                  from latest if checkpoint.dir has one and else start fresh (auto: restarts, requeues);\n"
    "                  best: the checkpoint of the best validation (eval.best_metric)\n"
    "  --init-from W   a new run (step 0, fresh optimizer and data order) from the weights of checkpoint W\n"
    "                  (a step directory, a checkpoint root or its latest/best file) or an exported model\n"
    "                  (vlm-ckpt export); the model config and tokenizer must be W's. A run that resumes\n"
    "                  (--resume auto finding a checkpoint) ignores it\n"
    "SIGTERM or SIGUSR1 (Slurm preemption) saves a checkpoint at the next step boundary and exits 0.\n"
    "  --help          this text\n"
    "Exit status: 0 finished or stopped by a signal; 2 the command's input is wrong (command line, config,\n"
    "data, layout for the rank count, the checkpoint it names: not restarted by vlm-launch); 1 otherwise.\n";

CommandLine parse_command_line(int argc, char** argv) {
  CommandLine cli;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&](const std::string& flag) -> std::string {
      std::string v;
      if (arg.compare(0, flag.size() + 1, flag + "=") == 0) {
        v = arg.substr(flag.size() + 1);
      } else if (i + 1 < argc) {
        v = argv[++i];
      }
      if (v.empty()) throw UsageError(flag + " needs a value\n" + kTrainUsage);  // "--init-from=" is a mistake, not "none"
      return v;
    };
    if (arg == "--help" || arg == "-h") {
      cli.help = true;
    } else if (arg == "--config" || arg.rfind("--config=", 0) == 0) {
      cli.config_path = value("--config");
    } else if (arg == "--resume" || arg.rfind("--resume=", 0) == 0) {
      cli.resume = value("--resume");
    } else if (arg == "--init-from" || arg.rfind("--init-from=", 0) == 0) {
      cli.init_from = value("--init-from");
    } else if (arg == "--set" || arg.rfind("--set=", 0) == 0) {
      cli.overrides.push_back(value("--set"));
    } else {
      throw UsageError("unknown argument '" + arg + "'\n" + kTrainUsage);
    }
  }
  if (!cli.help && cli.config_path.empty()) throw UsageError(std::string("--config is required\n") + kTrainUsage);
  return cli;
}

}  // namespace vlm
