# Cross-compiling for 64-bit ARM Linux (phones' and edge boxes' CPUs) with Debian's
# g++-aarch64-linux-gnu; tests run under qemu-user (tests/run-arm64.sh).
#   cmake -S . -B build/aarch64 -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake
# Abseil and GoogleTest come from Debian's arm64 packages (multiarch: dpkg --add-architecture
# arm64; apt-get install libabsl-dev:arm64 libgtest-dev:arm64), installed by
# scripts/install-deps.sh --arm64.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)
set(CMAKE_LIBRARY_ARCHITECTURE aarch64-linux-gnu)
set(CMAKE_FIND_ROOT_PATH /usr/aarch64-linux-gnu /usr/lib/aarch64-linux-gnu)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE BOTH)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE BOTH)
# LD_LIBRARY_PATH: the cross libc with the cross loader, never the multiarch libc6:arm64 (a
# mixed pair hangs in the first pthread_create; tests/run-arm64.sh explains).
set(CMAKE_CROSSCOMPILING_EMULATOR
    "qemu-aarch64;-L;/usr/aarch64-linux-gnu;-E;LD_LIBRARY_PATH=/usr/aarch64-linux-gnu/lib")
