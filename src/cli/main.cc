// The selfcond CLI: a thin frontend over the Engine. One options struct per subcommand
// (cli/commands.h), its flags declared once.
#include <cstdio>
#include <cstring>
#include <new>
#include <string>

#include "cli/commands.h"

namespace selfcond::cli {

int RunCommand(const CommandSpec& spec, int argc, char** argv,
               absl::Status (*run)(void* cmd, const Args& args), void* cmd) {
  auto args = Args::Parse(spec, argc, argv);
  if (!args.ok()) {
    std::fprintf(stderr, "selfcond %s: %s\n", spec.name.c_str(),
                 std::string(args.status().message()).c_str());
    return 2;
  }
  if (args->help()) {
    std::printf("%s", Args::Help(spec).c_str());
    return 0;
  }
  // Allocation failure is an error message, not an abort (the library returns
  // RESOURCE_EXHAUSTED where it checks sizes; this catches what remains).
  absl::Status st = args->Bind(spec);
  if (st.ok()) {
    try {
      st = run(cmd, *args);
    } catch (const std::bad_alloc&) {
      st = absl::ResourceExhaustedError("out of memory");
    }
  }
  if (!st.ok()) {
    std::fflush(stdout);
    std::fprintf(stderr, "selfcond %s: error: %s\n", spec.name.c_str(),
                 std::string(st.message()).c_str());
    return 1;
  }
  return 0;
}

const std::vector<Command>& Commands() {
  static const std::vector<Command> all = {
      {"convert",
       "Convert a Hugging Face checkpoint (GPT-2, Llama, Qwen2, Mistral) to a model file",
       ConvertMain},
      {"pull", "Download a checkpoint from the Hugging Face hub and convert it", PullMain},
      {"generate", "Generate a continuation, optionally conditioned (experts, steering, bias)",
       GenerateMain},
      {"ppl", "Perplexity of a text file", PplMain},
      {"inspect", "Print a model file's config, sizes and content hash", InspectMain},
      {"rank", "Rank every unit as an expert for one or more concepts", RankMain},
      {"responses", "Store the pooled unit responses of concept datasets' sentences",
       ResponsesMain},
      {"bench", "Measure speed and memory (JSON)", BenchMain},
      {"experiment", "Run one of the paper's experiments (football, gender, compare)",
       ExperimentMain},
  };
  return all;
}

namespace {

void PrintUsage() {
  std::printf(
      "selfcond: int8 transformer runtime with self-conditioning (expert units), GPT-2 and the\n"
      "Llama family\n\n"
      "usage: selfcond COMMAND [options]   (selfcond COMMAND --help for details)\n\ncommands:\n");
  for (const Command& c : Commands()) std::printf("  %-10s %s\n", c.name, c.summary);
}

}  // namespace
}  // namespace selfcond::cli

int main(int argc, char** argv) {
  using namespace selfcond::cli;
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h") ||
      !std::strcmp(argv[1], "help")) {
    PrintUsage();
    return argc < 2 ? 2 : 0;
  }
  for (const Command& c : Commands()) {
    if (!std::strcmp(c.name, argv[1])) return c.main(argc - 2, argv + 2);
  }
  std::fprintf(stderr, "selfcond: unknown command '%s'\n\n", argv[1]);
  PrintUsage();
  return 2;
}
