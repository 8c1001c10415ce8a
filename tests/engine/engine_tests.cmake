attn_cc_test(NAME collection_test SRCS engine/collection_test.cc
             DEPS attn_engine)
attn_cc_test(NAME exactness_test SRCS engine/exactness_test.cc
             DEPS attn_engine LABELS slow)
attn_cc_test(NAME snippet_test SRCS engine/snippet_test.cc
             DEPS attn_engine LABELS unit)
attn_cc_test(NAME catalog_test SRCS engine/catalog_test.cc
             DEPS attn_engine)
# The built-in text encoder inside a collection.
attn_cc_test(NAME text_collection_test SRCS engine/text_collection_test.cc
             DEPS attn_engine)
attn_cc_test(NAME paraphrase_test SRCS engine/paraphrase_test.cc
             DEPS attn_engine)
# Filters (equality and numeric ranges) against a brute-force oracle.
attn_cc_test(NAME filter_test SRCS engine/filter_test.cc
             DEPS attn_engine)
# The ANN index rebuild (background and explicit) with concurrent writes.
attn_cc_test(NAME rebuild_test SRCS engine/rebuild_test.cc
             DEPS attn_engine)
# Tuning the ANN search knob to a recall target (Collection::TuneIndex).
attn_cc_test(NAME tune_test SRCS engine/tune_test.cc
             DEPS attn_engine)
# Backup and restore (Collection::Backup, Catalog::Backup / Restore) while a
# writer runs, against a log of acknowledged writes.
attn_cc_test(NAME backup_test SRCS engine/backup_test.cc
             DEPS attn_engine LABELS unit)
# Subnormal, zero and non-finite vectors: validation, and no NaN or infinite
# score out of a search.
attn_cc_test(NAME vector_validation_test SRCS engine/vector_validation_test.cc
             DEPS attn_engine LABELS unit)
# Overwrites are atomic for readers: writers replace versioned documents
# while readers check that every Get and Search sees each one, whole and
# never older than an acknowledged version.
attn_cc_test(NAME overwrite_test SRCS engine/overwrite_test.cc
             DEPS attn_engine)
# Background insertion into the ANN graph: writes searchable at once (pending
# vectors scored exactly) against a brute-force oracle, deletes and filters on
# pending vectors, the pending limit, and a close with vectors pending.
attn_cc_test(NAME background_insert_test SRCS engine/background_insert_test.cc
             DEPS attn_engine)
# The token arena: records, compaction under pinned readers, the memory
# budget; searches through it equal searches that read the store.
attn_cc_test(NAME token_arena_test SRCS engine/token_arena_test.cc
             DEPS attn_engine)
# The residual token codec in a collection: training (explicit, automatic),
# codes scored against the reference on their decoded rows, the exact tier,
# reopening, retraining under writes and searches, bad input.
attn_cc_test(NAME token_codec_test SRCS engine/token_codec_test.cc
             DEPS attn_engine)
# The centroid first stage inside a collection (candidates_from).
attn_cc_test(NAME engine_first_stage_test SRCS engine/first_stage_test.cc
             DEPS attn_engine)
attn_cc_test(NAME lexical_collection_test SRCS engine/lexical_collection_test.cc
             DEPS attn_engine attn_lexical)
# Result diversification (collapse by a metadata field, near-duplicates)
# against an oracle walking the undiversified ranking.
attn_cc_test(NAME diversify_test SRCS engine/diversify_test.cc
             DEPS attn_engine LABELS unit)
