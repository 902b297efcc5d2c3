// Fault injection for the worker's recovery tests (wasm/tests/recovery.test.mjs): a real
// allocation failure inside the engine, as a model too large for memory would cause. Exported
// by the WASM module next to the C API, and by nothing else; the worker calls it only when its
// page asked for test hooks.
#include <cstddef>
#include <new>

extern "C" __attribute__((used)) int selfcond_wasm_test_alloc_fail(void) {
  // 4 GiB - 64 B: more than wasm32 can address, so malloc fails at once (without growing
  // memory) and operator new fails as it would for any allocation the memory cannot hold.
  void* p = ::operator new(static_cast<size_t>(-1) - 64);
  ::operator delete(p);
  return 0;
}
