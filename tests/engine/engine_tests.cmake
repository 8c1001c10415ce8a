attn_cc_test(NAME collection_test SRCS engine/collection_test.cc
             DEPS attn_engine)
attn_cc_test(NAME exactness_test SRCS engine/exactness_test.cc
             DEPS attn_engine LABELS slow)
attn_cc_test(NAME snippet_test SRCS engine/snippet_test.cc
             DEPS attn_engine LABELS unit)
attn_cc_test(NAME catalog_test SRCS engine/catalog_test.cc
             DEPS attn_engine)
