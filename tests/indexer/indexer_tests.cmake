# Tests of attnsearch-index (indexer/). Included from tests/CMakeLists.txt.
attn_cc_test(NAME indexer_parser_test SRCS indexer/record_parser_test.cc
             DEPS attn_indexer_lib ZLIB::ZLIB
             LABELS unit)

# End-to-end runs of the real binary: offline loads, bad lines and exit
# codes, resume after a crash, and an online load through the real server.
attn_cc_test(NAME indexer_tool_test SRCS indexer/indexer_tool_test.cc
             DEPS attn_indexer_lib attn_engine attn_proto gRPC::grpc++ ZLIB::ZLIB
                  nlohmann_json::nlohmann_json
             LABELS integration)
target_compile_definitions(indexer_tool_test PRIVATE
                           ATTN_SERVER_BINARY="$<TARGET_FILE:attnsearch-server>"
                           ATTN_INDEXER_BINARY="$<TARGET_FILE:attnsearch-index>")
add_dependencies(indexer_tool_test attnsearch-server attnsearch-index)

# attnsearch-index on folders of .npy files: equal to the JSON lines load,
# bad folders refused, resume after kill -9.
attn_cc_test(NAME npy_input_test SRCS indexer/npy_input_test.cc
             DEPS attn_indexer_lib attn_engine
             LABELS integration)
target_compile_definitions(npy_input_test PRIVATE
                           ATTN_INDEXER_BINARY="$<TARGET_FILE:attnsearch-index>")
add_dependencies(npy_input_test attnsearch-index)

# indexer/README.md's numpy snippet, run with Debian's python3 and numpy,
# and the folder it writes loaded by the real binary.
add_test(NAME npy_readme_test
         COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/indexer/npy_readme_test.sh
                 ${PROJECT_SOURCE_DIR} $<TARGET_FILE:attnsearch-index>)
set_tests_properties(npy_readme_test PROPERTIES LABELS integration TIMEOUT 120)
