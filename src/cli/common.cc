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

FlagSpec AllowUnhashedFlag(bool* v) {
  return Switch(v, "allow-unhashed",
                "accept expert tables without a model_hash (e.g. ml-selfcond's expertise.csv);\n"
                "they are only checked for the model's shape");
}

std::vector<FlagSpec> ModelFlags::Around(std::vector<FlagSpec> own) {
  std::vector<FlagSpec> out = {Text(&model, "model", "M", "model file (default: the demo model)")};
  out.insert(out.end(), own.begin(), own.end());
  out.push_back(OneOf(&precision, "precision", {"int8", "f32"}, "arithmetic"));
  out.push_back(
      Int(&threads, "threads", "N", "threads (0: every core)", 0, 256).ShowDefault("every core"));
  out.push_back(Switch(&no_verify, "no-verify",
                       "skip recomputing the model file's SHA-256 (faster load of a trusted file; "
                       "a\ncorrupt or tampered file is then not detected)"));
  out.push_back(Text(&packed_cache, "packed-cache", "DIR",
                     "keep XNNPACK's packed weights in DIR and reuse them on the next load of the\n"
                     "same model on this kind of CPU (skips 0.3-0.7 s of packing for GPT-2 small;\n"
                     "default: $SELFCOND_PACKED_CACHE, unset: off)"));
  out.push_back(Switch(&copy_model, "copy-model",
                       "read the model file into memory instead of mapping it (a file changed or\n"
                       "truncated by another process then cannot crash this one with SIGBUS)"));
  return out;
}

std::string ModelFlags::path() const { return model.empty() ? DefaultModelPath() : model; }

Precision ModelFlags::prec() const {
  return precision == "f32" ? Precision::kF32 : Precision::kInt8;
}

EngineOptions ModelFlags::engine_options() const {
  EngineOptions eo;
  eo.need_float = prec() == Precision::kF32;
  eo.verify_hash = !no_verify;
  eo.copy_to_memory = copy_model;
  eo.packed_cache_dir = packed_cache;
  eo.threads = threads;
  return eo;
}

absl::StatusOr<std::shared_ptr<Engine>> ModelFlags::Load() const {
  return Engine::Load(path(), engine_options());
}

absl::StatusOr<Runtime> LoadRuntime(const ModelFlags& m, int n_ctx, const std::string& kv_cache,
                                    int64_t max_memory_mib) {
  Runtime rt;
  auto engine = m.Load();
  if (!engine.ok()) return engine.status();
  rt.engine = std::move(*engine);
  if (auto st = ResizeSession(rt, m.prec(), n_ctx, kv_cache, max_memory_mib); !st.ok()) return st;
  return rt;
}

absl::Status ResizeSession(Runtime& rt, Precision precision, int n_ctx, const std::string& kv_cache,
                           int64_t max_memory_mib) {
  SessionOptions so;
  so.kv_type = kv_cache == "f16" ? SessionOptions::KvType::kF16 : SessionOptions::KvType::kF32;
  so.max_memory = static_cast<size_t>(max_memory_mib) << 20;
  so.precision = precision;
  so.n_ctx = n_ctx <= 0 ? 0 : std::min<int>(n_ctx, rt.model().config().n_ctx);
  rt.session.reset();
  auto session = rt.engine->NewSession(so, true);
  if (!session.ok()) return session.status();
  rt.session = std::move(*session);
  return absl::OkStatus();
}

absl::Status ConvertAndReport(const std::string& hf_dir, const std::string& out,
                              const ConvertOptions& opts) {
  Progress progress("convert");
  auto st = ConvertCheckpoint(hf_dir, out, opts, [&](float f) { progress.Update(f); });
  if (!st.ok()) {
    std::fprintf(stderr, "\n");
    return st;
  }
  progress.Done();
  Model::LoadOptions lo;
  lo.verify_hash = true;
  auto m = Model::Load(out, lo);
  if (!m.ok()) return m.status();
  std::printf("wrote %s (%.1f MiB, hash %s)\n", out.c_str(), (*m)->file_bytes() / 1048576.0,
              (*m)->hash_hex().c_str());
  return absl::OkStatus();
}

}  // namespace selfcond::cli
