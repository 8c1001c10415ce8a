# Tests of attnsearch-bench's non-timing logic (bench/attn_bench_lib).
attn_cc_test(NAME bench_lib_test SRCS bench/bench_lib_test.cc
             DEPS attn_bench_lib LABELS unit)
