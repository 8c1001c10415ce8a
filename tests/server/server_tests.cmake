# Integration tests of attnsearch-server: they start the real binary as a
# child process on an ephemeral loopback port. Included from
# tests/CMakeLists.txt.
attn_cc_test(NAME server_test SRCS server/server_test.cc
             DEPS attn_proto gRPC::grpc++
             LABELS integration)
target_compile_definitions(server_test PRIVATE
                           ATTN_SERVER_BINARY="$<TARGET_FILE:attnsearch-server>")
add_dependencies(server_test attnsearch-server)
