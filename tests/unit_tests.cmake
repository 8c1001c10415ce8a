# Unit tests of the core, storage, ann and rerank modules. Included from
# tests/CMakeLists.txt.
attn_cc_test(NAME core_infra_test
  SRCS ${CMAKE_CURRENT_LIST_DIR}/core/core_infra_test.cc
  DEPS attn_core nlohmann_json::nlohmann_json
  LABELS unit)
attn_cc_test(NAME vector_math_test
  SRCS ${CMAKE_CURRENT_LIST_DIR}/core/vector_math_test.cc
  DEPS attn_core
  LABELS unit)
attn_cc_test(NAME doc_store_test
  SRCS ${CMAKE_CURRENT_LIST_DIR}/storage/doc_store_test.cc
  DEPS attn_core attn_storage
  LABELS unit)
attn_cc_test(NAME ann_index_test
  SRCS ${CMAKE_CURRENT_LIST_DIR}/ann/ann_index_test.cc
  DEPS attn_core attn_ann
  LABELS unit)
attn_cc_test(NAME residual_codec_test
  SRCS ${CMAKE_CURRENT_LIST_DIR}/ann/residual_codec_test.cc
  DEPS attn_core attn_ann attn_rerank
  LABELS unit)
# The first stages from centroids and from fixed dimensional encodings,
# against brute-force scores and the reference reranker's exhaustive top 10.
attn_cc_test(NAME first_stage_test
  SRCS ${CMAKE_CURRENT_LIST_DIR}/ann/first_stage_test.cc
  DEPS attn_core attn_ann attn_rerank
  LABELS unit)
# Again on the AVX2 and portable kernels of the refining's halves.
foreach(level avx2 portable)
  add_test(NAME first_stage_test_simd_${level} COMMAND first_stage_test)
  set_tests_properties(first_stage_test_simd_${level} PROPERTIES
    ENVIRONMENT "ATTN_SIMD=${level}" LABELS unit)
endforeach()
attn_cc_test(NAME simd_distance_test
  SRCS ${CMAKE_CURRENT_LIST_DIR}/ann/simd_distance_test.cc
  DEPS attn_core attn_ann faiss
  LABELS unit)
attn_cc_test(NAME reranker_test
  SRCS ${CMAKE_CURRENT_LIST_DIR}/rerank/reranker_test.cc
  DEPS attn_core attn_rerank DNNL::dnnl
  LABELS unit)
attn_cc_test(NAME code_scorer_test
  SRCS ${CMAKE_CURRENT_LIST_DIR}/rerank/code_scorer_test.cc
  DEPS attn_core attn_rerank attn_ann
  LABELS unit)
# The nearest table row by bf16 matmuls, against the exact argmax.
attn_cc_test(NAME nearest_rows_test
  SRCS ${CMAKE_CURRENT_LIST_DIR}/rerank/nearest_rows_test.cc
  DEPS attn_core attn_rerank
  LABELS unit)
attn_cc_test(NAME segment_reduce_test
  SRCS ${CMAKE_CURRENT_LIST_DIR}/rerank/segment_reduce_test.cc
  DEPS attn_core attn_rerank
  LABELS unit)
attn_cc_test(NAME int8_test
  SRCS ${CMAKE_CURRENT_LIST_DIR}/rerank/int8_test.cc
  DEPS attn_core attn_rerank attn_storage
  LABELS unit)
# The reranker's tests again with oneDNN held below AMX: to AVX-512 with
# bf16 and VNNI, the kernels of machines without AMX (e.g. AMD Zen 4 and
# 5); and to AVX2, where bf16 and int8 rows are widened to f32 (no bf16
# matmul, no VNNI: e.g. AMD Zen 3).
foreach(isa AVX512_CORE_BF16 AVX2)
  foreach(t reranker_test int8_test nearest_rows_test code_scorer_test)
    add_test(NAME ${t}_isa_${isa} COMMAND ${t})
    set_tests_properties(${t}_isa_${isa} PROPERTIES
      ENVIRONMENT "ONEDNN_MAX_CPU_ISA=${isa}" LABELS unit)
  endforeach()
endforeach()
attn_cc_test(NAME lexical_index_test
  SRCS ${CMAKE_CURRENT_LIST_DIR}/lexical/lexical_index_test.cc
  DEPS attn_core attn_lexical
  LABELS unit)
attn_cc_test(NAME tokenizer_test
  SRCS ${CMAKE_CURRENT_LIST_DIR}/text/tokenizer_test.cc
  DEPS attn_core attn_text
  LABELS unit)
attn_cc_test(NAME stemmer_test
  SRCS ${CMAKE_CURRENT_LIST_DIR}/text/stemmer_test.cc
  DEPS attn_core attn_text
  LABELS unit)
attn_cc_test(NAME sparse_svd_test
  SRCS ${CMAKE_CURRENT_LIST_DIR}/text/sparse_svd_test.cc
  DEPS attn_core attn_text
  LABELS unit)
attn_cc_test(NAME wordnet_test
  SRCS ${CMAKE_CURRENT_LIST_DIR}/text/wordnet_test.cc
  DEPS attn_core attn_text
  LABELS unit)
attn_cc_test(NAME encoder_test
  SRCS ${CMAKE_CURRENT_LIST_DIR}/text/encoder_test.cc
  DEPS attn_core attn_text absl::flat_hash_map absl::flat_hash_set
  LABELS unit)
attn_cc_test(NAME http_server_test
  SRCS ${CMAKE_CURRENT_LIST_DIR}/http/http_server_test.cc
  DEPS attn_http ZLIB::ZLIB
  LABELS unit)
attn_cc_test(NAME npy_test
  SRCS ${CMAKE_CURRENT_LIST_DIR}/dataset/npy_test.cc
  DEPS attn_core attn_dataset
  LABELS unit)
target_compile_definitions(npy_test PRIVATE
                           ATTN_NPY_FIXTURES="${CMAKE_CURRENT_LIST_DIR}/dataset/npy")
