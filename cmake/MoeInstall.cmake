# cmake/MoeInstall.cmake — the installable library and the install rules.
#   libmoe.so (target moe_shared, OUTPUT_NAME moe): the C API (runtime/src/api) over the static runtime
#     parts, exporting only the moe_* symbols (a linker version script keeps every C++ symbol local, so
#     the library's internals never clash with an embedding program's).
#   `cmake --install` puts: include/moe/moe.h + moe.hpp, lib/libmoe.so*, the `moe` tool,
#     lib/cmake/moe/ (find_package(moe) -> imported target moe::moe) and lib/pkgconfig/moe.pc
#     (relocatable: paths are relative to the .pc file).
# Included from the top-level CMakeLists.txt after every component is defined.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

target_compile_definitions(moe_api PRIVATE MOE_VERSION_STRING="${PROJECT_VERSION}")

file(GLOB MOE_API_SRC CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/runtime/src/api/*.cpp)
add_library(moe_shared SHARED ${MOE_API_SRC})
add_library(moe::moe ALIAS moe_shared)
target_compile_definitions(moe_shared PRIVATE MOE_VERSION_STRING="${PROJECT_VERSION}")
target_include_directories(moe_shared PUBLIC
  $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}/runtime/include>
  $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>)
target_link_libraries(moe_shared PRIVATE moe_engine moe_tokenizer moe_template moe_store moe_planner moe_warnings)
set(MOE_SHARED_MAP ${CMAKE_CURRENT_BINARY_DIR}/libmoe.map)
file(WRITE ${MOE_SHARED_MAP} "{\n  global: moe_*;\n  local: *;\n};\n")
target_link_options(moe_shared PRIVATE -Wl,--version-script=${MOE_SHARED_MAP} -Wl,--no-undefined)
set_target_properties(moe_shared PROPERTIES
  OUTPUT_NAME moe
  EXPORT_NAME moe
  VERSION ${PROJECT_VERSION}
  SOVERSION ${PROJECT_VERSION_MAJOR}
  LINK_DEPENDS ${MOE_SHARED_MAP})

install(TARGETS moe_shared EXPORT moeTargets
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(FILES ${PROJECT_SOURCE_DIR}/runtime/include/moe/moe.h ${PROJECT_SOURCE_DIR}/runtime/include/moe/moe.hpp
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/moe)
install(TARGETS moe RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})

set(MOE_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/moe)
install(EXPORT moeTargets NAMESPACE moe:: FILE moeTargets.cmake DESTINATION ${MOE_CMAKE_DIR})
file(WRITE ${CMAKE_CURRENT_BINARY_DIR}/moeConfig.cmake
  "# find_package(moe): the imported target moe::moe (libmoe.so, C API moe/moe.h, C++ wrapper moe/moe.hpp).\n"
  "include(\"\${CMAKE_CURRENT_LIST_DIR}/moeTargets.cmake\")\n")
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/moeConfigVersion.cmake
  VERSION ${PROJECT_VERSION} COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/moeConfig.cmake ${CMAKE_CURRENT_BINARY_DIR}/moeConfigVersion.cmake
  DESTINATION ${MOE_CMAKE_DIR})

# pkg-config: prefix relative to the .pc file's folder, so the install prefix may be chosen at
# `cmake --install --prefix` time.
file(RELATIVE_PATH MOE_PC_UP "/${CMAKE_INSTALL_LIBDIR}/pkgconfig" "/")
string(REGEX REPLACE "/$" "" MOE_PC_UP "${MOE_PC_UP}")
file(WRITE ${CMAKE_CURRENT_BINARY_DIR}/moe.pc
  "prefix=\${pcfiledir}/${MOE_PC_UP}\n"
  "libdir=\${prefix}/${CMAKE_INSTALL_LIBDIR}\n"
  "includedir=\${prefix}/${CMAKE_INSTALL_INCLUDEDIR}\n"
  "\n"
  "Name: moe\n"
  "Description: Runtime for Mixture-of-Experts language models larger than the memory next to the compute\n"
  "Version: ${PROJECT_VERSION}\n"
  "Libs: -L\${libdir} -lmoe\n"
  "Cflags: -I\${includedir}\n")
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/moe.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
