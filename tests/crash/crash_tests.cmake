# attnsearch-crashtest (see tests/crash/README.md). Included from
# tests/CMakeLists.txt.
add_executable(attnsearch-crashtest
  ${CMAKE_CURRENT_LIST_DIR}/crashtest_main.cc
  ${CMAKE_CURRENT_LIST_DIR}/server_child.cc)
target_include_directories(attnsearch-crashtest PRIVATE ${PROJECT_SOURCE_DIR}/tests)
target_link_libraries(attnsearch-crashtest PRIVATE attn_proto gRPC::grpc++)
target_compile_options(attnsearch-crashtest PRIVATE -Wall -Wextra -Wno-unused-parameter)
target_compile_definitions(attnsearch-crashtest PRIVATE
                           ATTN_SERVER_BINARY="$<TARGET_FILE:attnsearch-server>")
set_target_properties(attnsearch-crashtest PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR})
add_dependencies(attnsearch-crashtest attnsearch-server)

# The short run of the suite: five SIGKILL/restart cycles (about 20 s). The
# long run is a command: attnsearch-crashtest --cycles=50 --seed=N.
add_test(NAME crash_test COMMAND attnsearch-crashtest --cycles=5 --seed=1)
set_tests_properties(crash_test PROPERTIES LABELS integration TIMEOUT 120)
# The checker has teeth: with documents deleted, overwritten and added behind
# its back after the first restart, the run must fail.
add_test(NAME crash_test_detects_faults
         COMMAND attnsearch-crashtest --cycles=1 --seed=2 --min_run_ms=300 --early_kill=0
                 --inject_faults)
set_tests_properties(crash_test_detects_faults PROPERTIES LABELS integration TIMEOUT 60
                     WILL_FAIL TRUE)
# The same with a residual token codec that trains itself (after 150
# documents) and re-encodes between kills: nothing acknowledged is lost, the
# token arena holds exactly the live documents' tokens after each restart,
# and the codec's version never goes back.
add_test(NAME crash_test_codes COMMAND attnsearch-crashtest --cycles=5 --seed=3
                                       --token_codec=residual)
set_tests_properties(crash_test_codes PROPERTIES LABELS integration TIMEOUT 180)
# And keeping only the codes: a kill during the training's re-encoding must
# leave each document with its rows or its codes, never neither.
add_test(NAME crash_test_codes_only COMMAND attnsearch-crashtest --cycles=4 --seed=5
                                            --token_codec=residual --codes_only)
set_tests_properties(crash_test_codes_only PROPERTIES LABELS integration TIMEOUT 180)
