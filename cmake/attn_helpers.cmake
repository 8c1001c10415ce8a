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
