# Fuzz targets (see tests/fuzz/README.md). Included from tests/CMakeLists.txt.
#
# Every build: the targets' bodies and fuzz_replay_test, which runs each
# target's seed corpus and recorded crash inputs through them.
# With ATTN_FUZZ=ON (clang): one libFuzzer binary per target,
# fuzz-<target>, and a short run of each as a ctest (label fuzz).
set(ATTN_FUZZ_TARGETS codec tokenizer jsonl fvecs request)
set(ATTN_FUZZ_SECONDS 20 CACHE STRING "Seconds each fuzz target runs under ctest (ATTN_FUZZ)")

add_library(attn_fuzz_bodies STATIC
  ${CMAKE_CURRENT_LIST_DIR}/codec_fuzz.cc
  ${CMAKE_CURRENT_LIST_DIR}/tokenizer_fuzz.cc
  ${CMAKE_CURRENT_LIST_DIR}/jsonl_fuzz.cc
  ${CMAKE_CURRENT_LIST_DIR}/request_fuzz.cc)
target_include_directories(attn_fuzz_bodies PUBLIC ${PROJECT_SOURCE_DIR}/src
                                                   ${PROJECT_SOURCE_DIR}/tests)
target_link_libraries(attn_fuzz_bodies PUBLIC attn_core attn_storage attn_text attn_dataset
                                              attn_indexer_lib attn_server attn_proto)
target_compile_options(attn_fuzz_bodies PRIVATE -Wall -Wextra -Wno-unused-parameter)

attn_cc_test(NAME fuzz_replay_test SRCS ${CMAKE_CURRENT_LIST_DIR}/fuzz_replay_test.cc
             DEPS attn_fuzz_bodies
             LABELS unit)
target_compile_definitions(fuzz_replay_test PRIVATE ATTN_FUZZ_DIR="${CMAKE_CURRENT_LIST_DIR}")

if(ATTN_FUZZ)
  set(bodies_codec FuzzCodec)
  set(bodies_tokenizer FuzzTokenizer)
  set(bodies_jsonl FuzzJsonLine)
  set(bodies_fvecs FuzzFvecs)
  set(bodies_request FuzzRequest)
  foreach(t ${ATTN_FUZZ_TARGETS})
    add_executable(fuzz-${t} ${CMAKE_CURRENT_LIST_DIR}/fuzz_main.cc)
    target_compile_definitions(fuzz-${t} PRIVATE ATTN_FUZZ_BODY=${bodies_${t}})
    target_link_libraries(fuzz-${t} PRIVATE attn_fuzz_bodies)
    target_link_options(fuzz-${t} PRIVATE -fsanitize=fuzzer)
    set_target_properties(fuzz-${t} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR})
    # A short run from the seed corpus; new inputs go to a scratch corpus in
    # the build tree, crashes to fuzz-artifacts/.
    add_test(NAME fuzz_${t}
             COMMAND ${CMAKE_COMMAND} -E env ASAN_OPTIONS=detect_leaks=1
                     $<TARGET_FILE:fuzz-${t}> -max_total_time=${ATTN_FUZZ_SECONDS}
                     -rss_limit_mb=4096 -timeout=30
                     -artifact_prefix=${PROJECT_BINARY_DIR}/fuzz-artifacts/${t}-
                     ${PROJECT_BINARY_DIR}/fuzz-corpus/${t}
                     ${CMAKE_CURRENT_LIST_DIR}/corpus/${t})
    set_tests_properties(fuzz_${t} PROPERTIES LABELS fuzz TIMEOUT 300)
    file(MAKE_DIRECTORY ${PROJECT_BINARY_DIR}/fuzz-corpus/${t} ${PROJECT_BINARY_DIR}/fuzz-artifacts)
  endforeach()
endif()
