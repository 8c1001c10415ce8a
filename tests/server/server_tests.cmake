# Integration tests of attnsearch-server: they start the real binary as a
# child process on an ephemeral loopback port. Included from
# tests/CMakeLists.txt.
attn_cc_test(NAME server_test SRCS server/server_test.cc
             DEPS attn_server attn_rerank attn_proto gRPC::grpc++
             LABELS integration)
target_compile_definitions(server_test PRIVATE
                           ATTN_SERVER_BINARY="$<TARGET_FILE:attnsearch-server>")
add_dependencies(server_test attnsearch-server)
# Text search through the server: TrainEncoder and text queries over gRPC.
# In-process.
attn_cc_test(NAME text_search_test SRCS server/text_search_test.cc
             DEPS attn_server attn_proto gRPC::grpc++
             LABELS integration)
# API keys, TLS and the command-line clients' security flags, over loopback.
attn_cc_test(NAME security_test SRCS server/security_test.cc
             DEPS attn_proto gRPC::grpc++
             LABELS integration)
target_compile_definitions(security_test PRIVATE
                           ATTN_SERVER_BINARY="$<TARGET_FILE:attnsearch-server>"
                           ATTN_INDEXER_BINARY="$<TARGET_FILE:attnsearch-index>"
                           ATTN_DEMO_BINARY="$<TARGET_FILE:attnsearch-demo>"
                           ATTN_TESTDATA_DIR="${CMAKE_CURRENT_SOURCE_DIR}/server/testdata")
add_dependencies(security_test attnsearch-server attnsearch-index attnsearch-demo)
# A table of bad requests against a server with small limits: code, message,
# still serving, nothing changed. In-process.
attn_cc_test(NAME bad_input_test SRCS server/bad_input_test.cc
             DEPS attn_server attn_proto gRPC::grpc++
             LABELS integration)
# Metrics endpoint, JSON call log and startup health, over loopback.
attn_cc_test(NAME observe_test SRCS server/observe_test.cc
             DEPS attn_proto gRPC::grpc++ nlohmann_json::nlohmann_json
             LABELS integration)
target_compile_definitions(observe_test PRIVATE
                           ATTN_SERVER_BINARY="$<TARGET_FILE:attnsearch-server>")
add_dependencies(observe_test attnsearch-server)
# The key file parser, key lookup, JSON escaping and histograms.
attn_cc_test(NAME server_auth_unit_test SRCS server/auth_unit_test.cc
             DEPS attn_server
             LABELS unit)
# Backup while writing, attnsearch-admin restore, a second server on the
# restored data directory; the Backup RPC's bad inputs and permission.
attn_cc_test(NAME backup_server_test SRCS server/backup_server_test.cc
             DEPS attn_proto gRPC::grpc++
             LABELS integration)
target_compile_definitions(backup_server_test PRIVATE
                           ATTN_SERVER_BINARY="$<TARGET_FILE:attnsearch-server>"
                           ATTN_ADMIN_BINARY="$<TARGET_FILE:attnsearch-admin>")
add_dependencies(backup_server_test attnsearch-server attnsearch-admin)
# The worker pool's order and the core each running job holds.
attn_cc_test(NAME worker_pool_test SRCS server/worker_pool_test.cc
             DEPS attn_server
             LABELS unit)
# The JSON API over HTTP, through the gRPC service, with API keys.
attn_cc_test(NAME json_gateway_test SRCS server/json_gateway_test.cc
             DEPS attn_server attn_proto gRPC::grpc++ nlohmann_json::nlohmann_json
                  PkgConfig::HTTPLIB
             LABELS integration)
target_compile_definitions(json_gateway_test PRIVATE
                           ATTN_TESTDATA_DIR="${CMAKE_CURRENT_SOURCE_DIR}/server/testdata"
                           ATTN_CONSOLE_DIR="${PROJECT_SOURCE_DIR}/src/server/console")
# The Server class in-process: TCP and in-process channels, Stop and a
# second Start, options refused by name, flags, metrics over HTTP.
attn_cc_test(NAME server_class_test SRCS server/server_class_test.cc
             DEPS attn_server attn_proto gRPC::grpc++
             LABELS integration)
