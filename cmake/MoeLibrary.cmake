# moe_component(NAME DIR [DEPS ...]): a static library from DIR/src/*.cpp (or an interface library
# while DIR has no sources yet) with DIR/include as its public include directory.
function(moe_component name dir)
  file(GLOB_RECURSE srcs CONFIGURE_DEPENDS ${dir}/src/*.cpp)
  if(srcs)
    add_library(${name} STATIC ${srcs})
    target_include_directories(${name} PUBLIC ${dir}/include)
    target_link_libraries(${name} PUBLIC ${ARGN} PRIVATE moe_warnings)
  else()
    add_library(${name} INTERFACE)
    target_include_directories(${name} INTERFACE ${dir}/include)
    target_link_libraries(${name} INTERFACE ${ARGN})
  endif()
endfunction()
