# The release tarball (CPack, TGZ): what `cmake --install --component selfcond` installs (the
# shared and static library, the header, the CMake package, pkg-config) plus the CLI (component
# "cli") and the README, under selfcond-<version>-linux-<processor>/:
#
#   cmake --build <build> && cpack --config <build>/CPackConfig.cmake -B <build>/release
#
# XNNPACK's own install rules stay out: only our two components are packed. The aarch64 stage
# (tests/run-arm64.sh) makes the linux-aarch64 tarball and builds demo/c against it, then runs
# the demos under qemu.
install(FILES ${CMAKE_SOURCE_DIR}/README.md DESTINATION ${CMAKE_INSTALL_DATAROOTDIR}/doc/selfcond
        COMPONENT selfcond)
set(CPACK_GENERATOR TGZ)
set(CPACK_PACKAGE_NAME selfcond)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_VENDOR "selfcond")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY
    "Self-conditioning of language models on device (int8 runtime, C API, CLI)")
string(TOLOWER "${CMAKE_SYSTEM_NAME}-${CMAKE_SYSTEM_PROCESSOR}" SELFCOND_RELEASE_SYSTEM)
set(CPACK_PACKAGE_FILE_NAME "selfcond-${PROJECT_VERSION}-${SELFCOND_RELEASE_SYSTEM}")
set(CPACK_COMPONENTS_ALL selfcond cli)
set(CPACK_ARCHIVE_COMPONENT_INSTALL OFF)  # one tarball with both components
set(CPACK_INCLUDE_TOPLEVEL_DIRECTORY ON)
set(CPACK_STRIP_FILES ON)
include(CPack)
