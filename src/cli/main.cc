// The selfcond CLI: a thin frontend over the library. One function per subcommand.
#include <cstdio>
#include <cstring>
#include <memory>
#include <new>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "cli/args.h"
#include "cli/commands.h"

namespace selfcond::cli {
namespace {

struct Command {
  const CommandSpec* spec;
  absl::Status (*run)(const Args&);
};

std::vector<Command> Commands() {
  return {
      {&ConvertSpec(), RunConvert}, {&GenerateSpec(), RunGenerate},
      {&PplSpec(), RunPpl},         {&InspectSpec(), RunInspect},
      {&RankSpec(), RunRank},       {&ResponsesSpec(), RunResponses},
      {&BenchSpec(), RunBench},     {&ExperimentSpec(), RunExperiment},
  };
}

void PrintUsage() {
  std::printf(
      "selfcond: int8 GPT-2 runtime with self-conditioning (expert units)\n\n"
      "usage: selfcond COMMAND [options]   (selfcond COMMAND --help for details)\n\ncommands:\n");
  for (const auto& c : Commands()) {
    const std::string first_line = c.spec->summary.substr(0, c.spec->summary.find('\n'));
    std::printf("  %-10s %s\n", c.spec->name.c_str(), first_line.c_str());
  }
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
  for (const auto& c : Commands()) {
    if (c.spec->name != argv[1]) continue;
    auto args = Args::Parse(*c.spec, argc - 2, argv + 2);
    if (!args.ok()) {
      std::fprintf(stderr, "selfcond %s: %s\n", argv[1],
                   std::string(args.status().message()).c_str());
      return 2;
    }
    if (args->help()) {
      std::printf("%s", Args::Help(*c.spec).c_str());
      return 0;
    }
    // Allocation failure is an error message, not an abort (the library returns
    // RESOURCE_EXHAUSTED where it checks sizes; this catches what remains).
    absl::Status st;
    try {
      st = c.run(*args);
    } catch (const std::bad_alloc&) {
      st = absl::ResourceExhaustedError("out of memory");
    }
    if (!st.ok()) {
      std::fflush(stdout);
      std::fprintf(stderr, "selfcond %s: error: %s\n", argv[1], std::string(st.message()).c_str());
      return 1;
    }
    return 0;
  }
  std::fprintf(stderr, "selfcond: unknown command '%s'\n\n", argv[1]);
  PrintUsage();
  return 2;
}
