# Tests of attnsearch-bench's non-timing logic (bench/attn_bench_lib).
attn_cc_test(NAME bench_lib_test SRCS bench/bench_lib_test.cc
             DEPS attn_bench_lib LABELS unit)
# Retrieval-quality metrics and the BEIR / run-file readers (bench/quality_metrics).
attn_cc_test(NAME quality_metrics_test SRCS bench/quality_metrics_test.cc
             DEPS attn_bench_lib LABELS unit)
