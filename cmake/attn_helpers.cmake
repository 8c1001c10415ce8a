# attn_cc_library(NAME name SRCS ... [DEPS ...] [PRIVATE_DEPS ...])
# A module library. Public headers live beside the sources; include paths are
# rooted at src/ ("storage/doc_store.h"). Third-party libraries a module wraps
# go in PRIVATE_DEPS so they never leak into its dependants.
function(attn_cc_library)
  cmake_parse_arguments(A "" "NAME" "SRCS;DEPS;PRIVATE_DEPS" ${ARGN})
  add_library(${A_NAME} STATIC ${A_SRCS})
  target_include_directories(${A_NAME} PUBLIC ${PROJECT_SOURCE_DIR}/src)
  target_link_libraries(${A_NAME} PUBLIC ${A_DEPS} PRIVATE ${A_PRIVATE_DEPS})
  target_compile_options(${A_NAME} PRIVATE -Wall -Wextra -Wno-unused-parameter)
endfunction()

# attn_cc_test(NAME name SRCS ... [DEPS ...] [LABELS ...])
# A GoogleTest binary registered with ctest, one ctest entry per test case.
function(attn_cc_test)
  cmake_parse_arguments(A "" "NAME" "SRCS;DEPS;LABELS" ${ARGN})
  add_executable(${A_NAME} ${A_SRCS})
  target_include_directories(${A_NAME} PRIVATE ${PROJECT_SOURCE_DIR}/src
                                               ${PROJECT_SOURCE_DIR}/tests)
  target_link_libraries(${A_NAME} PRIVATE ${A_DEPS} GTest::gtest GTest::gtest_main)
  if(A_LABELS)
    set(labels_prop PROPERTIES LABELS "${A_LABELS}")
  endif()
  gtest_discover_tests(${A_NAME} DISCOVERY_TIMEOUT 60 ${labels_prop})
endfunction()

# attn_embed_files(OUTPUT file.cc FUNCTION Name HEADER dir/header.h BASE dir FILES ...)
# Generates OUTPUT at build time: the FILES (relative to BASE) as bytes in
# the binary, returned by `std::span<const EmbeddedFile> FUNCTION()`, which
# HEADER declares (cmake/embed_files.cmake).
function(attn_embed_files)
  cmake_parse_arguments(A "" "OUTPUT;FUNCTION;HEADER;BASE" "FILES" ${ARGN})
  set(inputs "")
  foreach(name IN LISTS A_FILES)
    list(APPEND inputs "${A_BASE}/${name}")
  endforeach()
  string(JOIN "," files_arg ${A_FILES})
  add_custom_command(
    OUTPUT ${A_OUTPUT}
    COMMAND ${CMAKE_COMMAND} -DOUTPUT=${A_OUTPUT} -DFUNCTION=${A_FUNCTION} -DHEADER=${A_HEADER}
            -DBASE=${A_BASE} "-DFILES=${files_arg}" -P ${PROJECT_SOURCE_DIR}/cmake/embed_files.cmake
    DEPENDS ${inputs} ${PROJECT_SOURCE_DIR}/cmake/embed_files.cmake
    COMMENT "Embedding ${A_BASE}"
    VERBATIM)
endfunction()
