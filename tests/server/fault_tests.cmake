# Fault injection below RocksDB, seen over gRPC: an in-process server on a
# loopback port over a catalog whose stores read and write through
# StorageFaults. Included from tests/CMakeLists.txt.
attn_cc_test(NAME fault_test SRCS ${CMAKE_CURRENT_LIST_DIR}/fault_test.cc
             DEPS attn_server attn_engine attn_storage attn_proto gRPC::grpc++
             LABELS integration)
target_compile_definitions(fault_test PRIVATE
                           ATTN_SERVER_BINARY="$<TARGET_FILE:attnsearch-server>")
