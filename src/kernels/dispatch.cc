// Backend selection: which compiled-in backends this CPU can run, best first.
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "kernels/backends.h"
#include "kernels/kernels.h"

namespace selfcond::kernels {
namespace {

std::vector<const Backend*> DetectBackends() {
  std::vector<const Backend*> out;
#if defined(__x86_64__) || defined(_M_X64)
  // GCC's and clang's __builtin_cpu_supports also check that the OS saves the AVX / AVX-512
  // register state (XCR0), not just the CPUID bits.
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  const bool avx512vnni =
      avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
  if (avx512vnni) out.push_back(Avx512VnniBackend());
  if (avx2) out.push_back(Avx2Backend());
#endif
#if defined(SELFCOND_WASM)
  out.push_back(WasmSimd128Backend());
#endif
  out.push_back(ScalarBackendPtr());
  return out;
}

const std::vector<const Backend*>& Available() {
  static const std::vector<const Backend*>* const backends =
      new std::vector<const Backend*>(DetectBackends());
  return *backends;
}

}  // namespace

std::vector<const Backend*> AvailableBackends() { return Available(); }

const Backend* BackendByName(const std::string& name) {
  for (const Backend* b : Available()) {
    if (name == b->name) return b;
  }
  return nullptr;
}

// SELFCOND_BACKEND names a backend to use instead of the best one (for benchmarks and for
// testing a slower path on a fast machine). An unknown or unsupported name silently falls back
// to the best backend: the library prints nothing; frontends can compare DefaultBackend().name
// with the variable if they want to warn.
const Backend* BackendFromEnv() {
  const char* env = std::getenv("SELFCOND_BACKEND");
  return env != nullptr && *env != '\0' ? BackendByName(env) : nullptr;
}

const Backend& DefaultBackend() {
  static const Backend* const chosen = [] {
    const Backend* b = BackendFromEnv();
    return b != nullptr ? b : Available().front();
  }();
  return *chosen;
}

std::string CpuInfoField(const std::string& key) {
#if !defined(SELFCOND_WASM)
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(key, 0) != 0) continue;
    const size_t colon = line.find(':');
    if (colon == std::string::npos || line.find_first_not_of(" \t", key.size()) != colon) continue;
    const size_t start = line.find_first_not_of(' ', colon + 1);
    return start == std::string::npos ? std::string() : line.substr(start);
  }
#else
  (void)key;
#endif
  return "";
}

}  // namespace selfcond::kernels
