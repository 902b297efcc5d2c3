# The embeddable library and its installed package (included by the root CMakeLists.txt).
#
#   libselfcond.so.<version>  shared; exports only selfcond_* (src/api/selfcond.map)
#   libselfcond.a             static; one archive holding our layers + XNNPACK, pthreadpool and
#                             cpuinfo, so a static user links it, Abseil and the C++ runtime
#   include/selfcond/selfcond.h, lib/cmake/selfcond/ (find_package), lib/pkgconfig/selfcond.pc
#
# Install with: cmake --install <build> --prefix <prefix> --component selfcond
# (the component keeps XNNPACK's own install rules out of the prefix).
include(GNUInstallDirs)

file(GLOB SELFCOND_API_SOURCES CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/src/api/*.cc)

# Static objects of the C API, for the combined archive.
add_library(selfcond_api STATIC ${SELFCOND_API_SOURCES})
target_include_directories(selfcond_api PUBLIC ${CMAKE_SOURCE_DIR}/include)
target_link_libraries(selfcond_api PUBLIC selfcond_core)

add_library(selfcond_shared SHARED ${SELFCOND_API_SOURCES})
target_include_directories(selfcond_shared PUBLIC ${CMAKE_SOURCE_DIR}/include)
target_link_libraries(selfcond_shared PRIVATE selfcond_core)
target_compile_definitions(selfcond_shared PRIVATE SELFCOND_BUILDING_LIBRARY=1)
set_target_properties(selfcond_shared PROPERTIES
  OUTPUT_NAME selfcond
  VERSION ${PROJECT_VERSION}
  SOVERSION ${PROJECT_VERSION_MAJOR}
  CXX_VISIBILITY_PRESET hidden
  VISIBILITY_INLINES_HIDDEN ON
  LINK_DEPENDS ${CMAKE_SOURCE_DIR}/src/api/selfcond.map)
target_link_options(selfcond_shared PRIVATE
  -Wl,--version-script=${CMAKE_SOURCE_DIR}/src/api/selfcond.map)
if(NOT SELFCOND_SANITIZE AND NOT SELFCOND_FUZZ)
  # Every symbol resolved at link time (sanitizer runtimes are linked into executables only).
  target_link_options(selfcond_shared PRIVATE -Wl,--no-undefined)
endif()

# libselfcond.a: every archive the library needs, merged with an ar MRI script.
set(SELFCOND_STATIC_PARTS selfcond_api selfcond_engine selfcond_experts selfcond_model selfcond_formats
    selfcond_util selfcond_kernels)
if(SELFCOND_XNNPACK)
  list(APPEND SELFCOND_STATIC_PARTS XNNPACK xnnpack-microkernels-prod pthreadpool cpuinfo)
endif()
set(SELFCOND_STATIC_LIB ${CMAKE_BINARY_DIR}/libselfcond.a)
set(part_files)
foreach(part ${SELFCOND_STATIC_PARTS})
  list(APPEND part_files $<TARGET_FILE:${part}>)
endforeach()
if(SELFCOND_XNNPACK_MICROKERNELS)  # the sanitizer builds' kernels (cmake/third_party.cmake)
  list(APPEND part_files ${SELFCOND_XNNPACK_MICROKERNELS})
endif()
# Abseil goes inside too (cmake/merge_static.cmake: the static archives of the Abseil libraries
# the shared library needs), so that a program links libselfcond.a without Abseil installed.
find_program(SELFCOND_READELF NAMES ${CMAKE_CXX_LIBRARY_ARCHITECTURE}-readelf
             aarch64-linux-gnu-readelf readelf REQUIRED)
add_custom_command(OUTPUT ${SELFCOND_STATIC_LIB}
  COMMAND ${CMAKE_COMMAND} -E rm -f ${SELFCOND_STATIC_LIB}
  COMMAND ${CMAKE_COMMAND} -DOUT=${SELFCOND_STATIC_LIB} -DMRI=${CMAKE_BINARY_DIR}/selfcond_static.mri
          "-DPARTS=${part_files}" -DSHARED=$<TARGET_FILE:selfcond_shared>
          -DREADELF=${SELFCOND_READELF} -DABSL_DIR=$<TARGET_FILE_DIR:absl::status>
          -P ${CMAKE_SOURCE_DIR}/cmake/merge_static.cmake
  COMMAND ${CMAKE_AR} -M < ${CMAKE_BINARY_DIR}/selfcond_static.mri
  COMMAND ${CMAKE_RANLIB} ${SELFCOND_STATIC_LIB}
  DEPENDS ${SELFCOND_STATIC_PARTS} ${part_files} selfcond_shared
          ${CMAKE_SOURCE_DIR}/cmake/merge_static.cmake
  COMMENT "Merging libselfcond.a (our archives, XNNPACK and Abseil)"
  VERBATIM)
add_custom_target(selfcond_static ALL DEPENDS ${SELFCOND_STATIC_LIB})

# ---- install (component "selfcond") ----
install(TARGETS selfcond_shared
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT selfcond
  NAMELINK_COMPONENT selfcond)
install(FILES ${SELFCOND_STATIC_LIB} DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT selfcond)
install(FILES ${CMAKE_SOURCE_DIR}/include/selfcond/selfcond.h
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/selfcond COMPONENT selfcond)

include(CMakePackageConfigHelpers)
set(SELFCOND_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/selfcond)
configure_package_config_file(${CMAKE_SOURCE_DIR}/cmake/selfcondConfig.cmake.in
  ${CMAKE_BINARY_DIR}/selfcondConfig.cmake
  INSTALL_DESTINATION ${SELFCOND_CMAKE_DIR}
  PATH_VARS CMAKE_INSTALL_LIBDIR CMAKE_INSTALL_INCLUDEDIR)
write_basic_package_version_file(${CMAKE_BINARY_DIR}/selfcondConfigVersion.cmake
  VERSION ${PROJECT_VERSION} COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_BINARY_DIR}/selfcondConfig.cmake ${CMAKE_BINARY_DIR}/selfcondConfigVersion.cmake
  DESTINATION ${SELFCOND_CMAKE_DIR} COMPONENT selfcond)

# pkg-config: Libs for the shared library; Libs.private for `pkg-config --static`.
# libselfcond.a carries Abseil: the C++ runtime, libm and pthreads are all it needs.
set(SELFCOND_PC_PRIVATE "-lstdc++ -lm -lpthread")
file(RELATIVE_PATH SELFCOND_PC_TO_PREFIX "/prefix/${CMAKE_INSTALL_LIBDIR}/pkgconfig" "/prefix")
configure_file(${CMAKE_SOURCE_DIR}/cmake/selfcond.pc.in ${CMAKE_BINARY_DIR}/selfcond.pc @ONLY)
install(FILES ${CMAKE_BINARY_DIR}/selfcond.pc
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig COMPONENT selfcond)
