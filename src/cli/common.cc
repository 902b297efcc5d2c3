#include "cli/common.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace selfcond::cli {

Progress::Progress(std::string label)
    : label_(std::move(label)), start_(std::chrono::steady_clock::now()) {}

// On a terminal the bar redraws in place; in a log (CI, a pipe) it prints one plain line per
// quarter instead of hundreds of carriage-return redraws.
void Progress::Update(double fraction, const std::string& extra) {
  static const bool tty = isatty(fileno(stderr)) != 0;
  int pct = static_cast<int>(fraction * 100);
  if (!tty) pct = pct / 25 * 25;
  if (pct == last_) return;
  last_ = pct;
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  if (!tty) {
    std::fprintf(stderr, "%s %3d%% %5.1fs %s\n", label_.c_str(), pct, secs, extra.c_str());
    return;
  }
  const int width = 30, filled = pct * width / 100;
  std::fprintf(stderr, "\r%s [%s%s] %3d%% %5.1fs %s", label_.c_str(),
               std::string(filled, '#').c_str(), std::string(width - filled, '.').c_str(), pct,
               secs, extra.c_str());
  std::fflush(stderr);
}

void Progress::Done(const std::string& extra) {
  const bool tty = isatty(fileno(stderr)) != 0;
  if (!tty && last_ == 100 && extra.empty()) return;
  last_ = -1;
  Update(1.0, extra);
  if (tty) std::fprintf(stderr, "\n");
}

std::string DefaultModelPath() {
  // The committed demo model: relative to the working directory (the repo root), or to the
  // binary (build/<dir>/selfcond in the repo).
  const std::string rel = "demo/models/selfcond-mini-30m.scm";
  std::vector<std::filesystem::path> candidates = {rel, std::filesystem::path("..") / rel};
  std::error_code ec;
  const auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    for (auto dir = exe.parent_path(); !dir.empty() && dir != dir.root_path();
         dir = dir.parent_path()) {
      candidates.push_back(dir / rel);
    }
  }
  for (const auto& p : candidates) {
    if (std::filesystem::exists(p, ec)) return p.string();
  }
  return rel;
}

FlagSpec NoVerifyFlag() {
  return {"no-verify", "",
          "skip recomputing the model file's SHA-256 (faster load of a trusted file; a corrupt\n"
          "or tampered file is then not detected)"};
}

FlagSpec CopyModelFlag() {
  return {"copy-model", "",
          "read the model file into memory instead of mapping it (a file changed or truncated\n"
          "by another process then cannot crash this one with SIGBUS)"};
}

FlagSpec AllowUnhashedFlag() {
  return {"allow-unhashed", "",
          "accept expert tables without a model_hash (e.g. ml-selfcond's expertise.csv); they\n"
          "are only checked for the model's shape"};
}

std::vector<FlagSpec> WithModelFlags(std::vector<FlagSpec> flags) {
  std::vector<FlagSpec> out = {{"model", "M", "model file (default: the demo model)"}};
  out.insert(out.end(), flags.begin(), flags.end());
  out.push_back({"precision", "int8|f32", "arithmetic (default int8)"});
  out.push_back({"threads", "N", "threads (default: all cores)"});
  out.push_back(NoVerifyFlag());
  out.push_back(CopyModelFlag());
  return out;
}

Model::LoadOptions ModelLoadOptions(const Args& args, Precision precision) {
  Model::LoadOptions lo;
  lo.need_float = precision == Precision::kF32;
  lo.verify_hash = !args.Has("no-verify");
  lo.copy_to_memory = args.Has("copy-model");
  return lo;
}

EngineOptions EngineLoadOptions(const Args& args, Precision precision, int threads) {
  const Model::LoadOptions lo = ModelLoadOptions(args, precision);
  EngineOptions eo;
  eo.verify_hash = lo.verify_hash;
  eo.need_float = lo.need_float;
  eo.copy_to_memory = lo.copy_to_memory;
  eo.threads = threads;
  return eo;
}

absl::StatusOr<Runtime> LoadRuntime(const Args& args, int threads, int n_ctx) {
  const std::string precision = args.Get("precision", "int8");
  const std::string model_path = args.Get("model");
  auto prec = ParsePrecision(precision);
  if (!prec.ok()) return prec.status();
  Runtime rt;
  auto engine = Engine::Load(model_path.empty() ? DefaultModelPath() : model_path,
                             EngineLoadOptions(args, *prec, threads));
  if (!engine.ok()) return engine.status();
  rt.engine = std::move(*engine);
  if (n_ctx >= 0) {
    if (auto st = LoadRuntimeSession(rt, precision, n_ctx); !st.ok()) return st;
  }
  return rt;
}

absl::Status LoadRuntimeSession(Runtime& rt, const std::string& precision, int n_ctx,
                                const std::string& kv_cache, int64_t max_memory_mib) {
  auto prec = ParsePrecision(precision);
  if (!prec.ok()) return prec.status();
  if (kv_cache != "f32" && kv_cache != "f16") {
    return absl::InvalidArgumentError(
        absl::StrCat("--kv-cache must be f32 or f16, got '", kv_cache, "'"));
  }
  SessionOptions so;
  so.kv_type = kv_cache == "f16" ? SessionOptions::KvType::kF16 : SessionOptions::KvType::kF32;
  so.max_memory = static_cast<size_t>(max_memory_mib) << 20;
  so.precision = *prec;
  so.n_ctx = n_ctx <= 0 ? 0 : std::min<int>(n_ctx, rt.model().config().n_ctx);
  rt.session.reset();
  auto session = rt.engine->NewSession(so, true);
  if (!session.ok()) return session.status();
  rt.session = std::move(*session);
  return absl::OkStatus();
}

}  // namespace selfcond::cli
