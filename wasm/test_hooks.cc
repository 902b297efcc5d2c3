// Fault injection for the worker's recovery tests (wasm/tests/recovery.test.mjs): a real
// allocation failure inside the engine, as a model too large for memory would cause. Exported
// by the WASM module next to the C API, and by nothing else; the worker calls it only when its
// page asked for test hooks.
#include <cstddef>
#include <new>
#include <vector>

extern "C" __attribute__((used)) int selfcond_wasm_test_alloc_fail(void) {
  // More than wasm32 can address: operator new fails at once (without growing memory) and, in
  // this build without exceptions, the C++ runtime aborts, as with any failed allocation.
  std::vector<char> v(static_cast<size_t>(-1) / 2 - 64);
  return static_cast<int>(v.size());
}
