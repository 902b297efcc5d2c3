// selfcond pull: download a checkpoint from the Hugging Face hub (tools/pull.h) and convert it.
#include <unistd.h>

#include <cstdio>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "cli/commands.h"
#include "cli/common.h"
#include "tools/convert.h"
#include "tools/pull.h"
#include "util/file_util.h"

namespace selfcond::cli {
namespace {

struct PullCommand {
  std::string out;
  std::string weights = "int8";
  bool keep_float = false;
  std::string name;
  int retries = 3;
  int timeout = 30;

  CommandSpec Spec() {
    return {
        "pull",
        "selfcond pull REPO_ID[@REVISION] [--out FILE.scm] [--weights int8|int4] [--keep-float]\n"
        "       [--name NAME]",
        "Download a checkpoint from the Hugging Face hub (what huggingface_hub's\n"
        "snapshot_download does) and convert it into a selfcond model file. REPO_ID is\n"
        "OWNER/NAME (or NAME); REVISION a branch, tag or commit sha (default: main). Only what\n"
        "`selfcond convert` reads is downloaded: config.json, the weights (model.safetensors or\n"
        "its sharded index and shards; else pytorch_model.bin or its shards) and the tokenizer\n"
        "files. LFS files are checked against their sha256; a failed download leaves no output.\n"
        "\n"
        "Environment:\n"
        "  HF_ENDPOINT     the hub (default https://huggingface.co; a mirror or a local server)\n"
        "  HF_TOKEN        access token for private and gated repos (sent to the hub only, not\n"
        "                  to the CDN it redirects to)\n"
        "  HF_HUB_OFFLINE  1: no network; use the cache only\n"
        "  SELFCOND_CACHE  the download cache (default $XDG_CACHE_HOME/selfcond, else\n"
        "                  ~/.cache/selfcond)\n"
        "\n"
        "Cache: huggingface_hub's layout: models--OWNER--NAME/blobs/<etag> (the files),\n"
        "snapshots/<commit>/<file> (links to them) and refs/<revision> (the commit). A second\n"
        "pull of the same revision downloads nothing; an interrupted download resumes where it\n"
        "stopped (blobs/<etag>.incomplete). Delete the directory to reclaim the space.",
        {Text(&out, "out", "FILE.scm",
              "output model file (default: NAME.scm in the current directory, NAME being the\n"
              "repo's last path component, e.g. gpt2.scm for openai-community/gpt2)"),
         OneOf(&weights, "weights", {"int8", "int4"},
               "bits of the blocks' linear layers (as in convert)"),
         Switch(&keep_float, "keep-float",
                "also store float32 weights (exact f32 path; ~4x larger file)"),
         Text(&name, "name", "NAME",
              "model name stored in the file (default: the repo's last path component)"),
         Int(&retries, "retries", "N",
             "resume a transfer that breaks midway up to N times before failing (a later pull\n"
             "resumes too)",
             0, 100),
         Int(&timeout, "timeout", "S", "fail a transfer stalled (under 1 byte/s) for S seconds", 1,
             3600)},
        1,
        1};
  }

  absl::Status Run(const Args& args) {
    auto spec = ParseRepoSpec(args.positional()[0]);
    if (!spec.ok()) return spec.status();
    PullOptions po = PullOptionsFromEnv();
    po.repo = spec->first;
    po.revision = spec->second;
    po.retries = retries;
    po.stall_timeout_s = timeout;
    // On a terminal the note starts below the progress bar being redrawn.
    po.on_note = [](const std::string& s) {
      std::fprintf(stderr, "%snote: %s\n", isatty(fileno(stderr)) ? "\n" : "", s.c_str());
    };
    const std::string base = po.repo.substr(po.repo.rfind('/') + 1);
    const std::string out_path = out.empty() ? base + ".scm" : out;
    absl::Status st = CheckOutputPath(out_path, {});
    if (!st.ok()) return st;

    Progress bar("download");
    bool drew = false;
    auto snap = PullSnapshot(po, [&](uint64_t done, uint64_t total, const std::string& file) {
      if (total == 0) return;
      drew = true;
      bar.Update(static_cast<double>(done) / static_cast<double>(total),
                 absl::StrFormat("%.1f/%.1f MiB %s", done / 1048576.0, total / 1048576.0, file));
    });
    if (!snap.ok()) {
      if (drew) std::fprintf(stderr, "\n");
      return snap.status();
    }
    if (drew) {
      bar.Done();
    } else {
      std::fprintf(stderr, "all files in the cache\n");
    }
    std::fprintf(stderr, "snapshot %s\n", snap->c_str());

    ConvertOptions opts;
    opts.keep_float = keep_float;
    opts.model_name = name.empty() ? base : name;
    opts.weights = weights == "int4" ? WeightBits::kInt4 : WeightBits::kInt8;
    return ConvertAndReport(*snap, out_path, opts);
  }
};

}  // namespace

int PullMain(int argc, char** argv) { return Main<PullCommand>(argc, argv); }

}  // namespace selfcond::cli
