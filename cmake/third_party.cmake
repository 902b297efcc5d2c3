# XNNPACK and its dependencies, from pinned commits (see docs/kernels.md, "Build").
#
# A user with internet gets them with FetchContent from the upstream repositories at the exact
# commits below. Where the source archives of those commits are present (this project's
# ../shared/third_party/, or SELFCOND_THIRD_PARTY_DIR), they are used instead and checked against
# SHA256SUMS, so nothing is downloaded.
#
# Defines the targets XNNPACK, xnnpack-microkernels-prod (static, production microkernels only)
# and pthreadpool. Included by the root CMakeLists.txt BEFORE any project-wide compile option:
# XNNPACK is built without our warnings and sanitizers (its kernels read up to XNN_EXTRA_BYTES
# past their inputs by design).
include(FetchContent)

set(SELFCOND_THIRD_PARTY_DIR "${CMAKE_SOURCE_DIR}/../shared/third_party"
    CACHE PATH "Folder with pinned source archives NAME-COMMIT.tar.gz and SHA256SUMS")

set(SELFCOND_XNNPACK_COMMIT 75db3c093b6d74fe90b8df82670cd8a01102ba38)
set(SELFCOND_CPUINFO_COMMIT d6108819d1d41c749b076e250be454c4559cb771)
set(SELFCOND_PTHREADPOOL_COMMIT 0e6ca13779b57d397a5ba6bfdcaa8a275bc8ea2e)
set(SELFCOND_FXDIV_COMMIT 63058eff77e11aa15bf531df5dd34395ec3017c8)

# selfcond_fetch(<name> <archive name> <git url> <commit>): sets <name>_SOURCE_DIR.
function(selfcond_fetch name archive_name repo commit)
  set(archive "${SELFCOND_THIRD_PARTY_DIR}/${archive_name}-${commit}.tar.gz")
  if(EXISTS "${archive}")
    set(sha "")
    if(EXISTS "${SELFCOND_THIRD_PARTY_DIR}/SHA256SUMS")
      file(STRINGS "${SELFCOND_THIRD_PARTY_DIR}/SHA256SUMS" lines REGEX "${archive_name}-${commit}")
      if(lines)
        string(REGEX MATCH "^[0-9a-f]+" sha "${lines}")
      endif()
    endif()
    if(sha)
      FetchContent_Declare(${name} URL "${archive}" URL_HASH SHA256=${sha}
                         DOWNLOAD_EXTRACT_TIMESTAMP TRUE)
    else()
      FetchContent_Declare(${name} URL "${archive}" DOWNLOAD_EXTRACT_TIMESTAMP TRUE)
    endif()
  else()
    FetchContent_Declare(${name} GIT_REPOSITORY "${repo}" GIT_TAG ${commit} GIT_SHALLOW FALSE)
  endif()
  FetchContent_GetProperties(${name})
  if(NOT ${name}_POPULATED)
    FetchContent_Populate(${name})
  endif()
  set(${name}_SOURCE_DIR "${${name}_SOURCE_DIR}" PARENT_SCOPE)
endfunction()

selfcond_fetch(xnnpack XNNPACK https://github.com/google/XNNPACK.git ${SELFCOND_XNNPACK_COMMIT})
selfcond_fetch(cpuinfo cpuinfo https://github.com/pytorch/cpuinfo.git ${SELFCOND_CPUINFO_COMMIT})
selfcond_fetch(pthreadpool pthreadpool https://github.com/google/pthreadpool.git
               ${SELFCOND_PTHREADPOOL_COMMIT})
selfcond_fetch(fxdiv FXdiv https://github.com/Maratyszcza/FXdiv.git ${SELFCOND_FXDIV_COMMIT})

# pthreadpool's workers spin 1,000 `pause`s (15-40 us) after a parallel region, then sleep on a
# futex. Decode runs ~100 small regions per token with serial gaps (norms, attention, sampling)
# that often outlast that spin, so the worker sleeps and every region pays a futex wake-up; in a
# VM (these machines) or a browser's Worker that costs tens of microseconds, and two threads
# decoded no faster than one (docs/kernels.md, "Threads at decode"). Spin as pthreadpool already
# does on Android (100,000 pauses + 10 yields, a few ms) before sleeping. Patched in the fetched
# copy, idempotently: the pinned archive stays as it is.
set(_spin_h "${pthreadpool_SOURCE_DIR}/src/threadpool-common.h")
file(READ "${_spin_h}" _spin)
string(REPLACE
  "#define PTHREADPOOL_SPIN_YIELD_ITERATIONS 0\n#define PTHREADPOOL_SPIN_PAUSE_ITERATIONS 1000\n"
  "/* selfcond: spin as on Android (cmake/third_party.cmake) */\n#define PTHREADPOOL_SPIN_YIELD_ITERATIONS 10\n#define PTHREADPOOL_SPIN_PAUSE_ITERATIONS 100000\n"
  _spin_patched "${_spin}")
if(NOT _spin STREQUAL _spin_patched)
  file(WRITE "${_spin_h}" "${_spin_patched}")
elseif(NOT _spin MATCHES "selfcond: spin as on Android")
  message(FATAL_ERROR "pthreadpool: the spin-wait constants moved in ${_spin_h}; update the patch")
endif()

if(EMSCRIPTEN AND SELFCOND_WASM_THREADS)
  # pthreadpool's CMake always compiles its single-threaded shim for Emscripten (a pool of
  # 2 reports 1 thread). The real pthreads implementation works under Emscripten pthreads:
  # build it here, before XNNPACK looks for a `pthreadpool` target.
  add_library(pthreadpool STATIC
    ${pthreadpool_SOURCE_DIR}/src/portable-api.c ${pthreadpool_SOURCE_DIR}/src/memory.c
    ${pthreadpool_SOURCE_DIR}/src/pthreads.c ${pthreadpool_SOURCE_DIR}/src/legacy-api.c)
  target_include_directories(pthreadpool PUBLIC ${pthreadpool_SOURCE_DIR}/include
    PRIVATE ${pthreadpool_SOURCE_DIR}/src ${fxdiv_SOURCE_DIR}/include)
  target_compile_options(pthreadpool PRIVATE -pthread)
endif()

set(XNNPACK_BUILD_TESTS OFF CACHE BOOL "" FORCE)
set(XNNPACK_BUILD_BENCHMARKS OFF CACHE BOOL "" FORCE)
set(XNNPACK_BUILD_ALL_MICROKERNELS OFF CACHE BOOL "" FORCE)
set(XNNPACK_ENABLE_KLEIDIAI OFF CACHE BOOL "" FORCE)
set(XNNPACK_LIBRARY_TYPE static CACHE STRING "" FORCE)
if(EMSCRIPTEN)
  # Debian's emscripten 3.1.6 (clang 14) has no relaxed-SIMD intrinsics.
  set(XNNPACK_ENABLE_WASMRELAXEDSIMD OFF CACHE BOOL "" FORCE)
endif()
set(PTHREADPOOL_BUILD_TESTS OFF CACHE BOOL "" FORCE)
set(PTHREADPOOL_BUILD_BENCHMARKS OFF CACHE BOOL "" FORCE)
set(CPUINFO_BUILD_TOOLS OFF CACHE BOOL "" FORCE)
set(CPUINFO_BUILD_UNIT_TESTS OFF CACHE BOOL "" FORCE)
set(CPUINFO_BUILD_MOCK_TESTS OFF CACHE BOOL "" FORCE)
set(CPUINFO_BUILD_BENCHMARKS OFF CACHE BOOL "" FORCE)
set(CPUINFO_SOURCE_DIR "${cpuinfo_SOURCE_DIR}" CACHE STRING "" FORCE)
set(PTHREADPOOL_SOURCE_DIR "${pthreadpool_SOURCE_DIR}" CACHE STRING "" FORCE)
set(FXDIV_SOURCE_DIR "${fxdiv_SOURCE_DIR}" CACHE STRING "" FORCE)
add_subdirectory(${xnnpack_SOURCE_DIR} ${CMAKE_BINARY_DIR}/_deps/xnnpack-build EXCLUDE_FROM_ALL)

# The sanitizer builds (tests/run.sh, stage 2) reuse the release build's production microkernels
# instead of compiling their ~1,000 files twice more (a third of CI's compile time). Why that
# loses little: the microkernels are leaf functions over the pointers they are given, and those
# that read past a buffer's end (XNN_EXTRA_BYTES) are already excluded from ASan by XNNPACK
# (XNN_OOB_READS); everything that calls them (operators, packing, subgraph, pthreadpool,
# cpuinfo) is still compiled here with the sanitizer. The archive must come from the same
# pinned XNNPACK with the same options: a kernel the configs name but the archive lacks fails
# the link, not a test.
set(SELFCOND_XNNPACK_MICROKERNELS "" CACHE FILEPATH
    "Prebuilt libxnnpack-microkernels-prod.a of the same XNNPACK (sanitizer builds only)")
if(SELFCOND_XNNPACK_MICROKERNELS)
  if(NOT EXISTS "${SELFCOND_XNNPACK_MICROKERNELS}")
    message(FATAL_ERROR "SELFCOND_XNNPACK_MICROKERNELS: no such file ${SELFCOND_XNNPACK_MICROKERNELS}")
  endif()
  file(WRITE "${CMAKE_BINARY_DIR}/selfcond_prebuilt_microkernels.c"
       "/* the kernels come from ${SELFCOND_XNNPACK_MICROKERNELS} */\nint selfcond_prebuilt_microkernels;\n")
  set_property(TARGET xnnpack-microkernels-prod PROPERTY SOURCES
               "${CMAKE_BINARY_DIR}/selfcond_prebuilt_microkernels.c")
  target_link_libraries(xnnpack-microkernels-prod PUBLIC "${SELFCOND_XNNPACK_MICROKERNELS}")
endif()
