// attnsearch-index: loads a corpus into a collection, offline (in-process,
// --data_dir) or through a running server (--server). See README.md.
#include <malloc.h>

#include <cmath>
#include <cstdio>
#include <optional>
#include <string>

#include "CLI/CLI.hpp"
#include "absl/strings/str_split.h"
#include "cli/parse_flags.h"
#include "indexer/indexer.h"

namespace ai = attnsearch::indexer;

namespace {

constexpr const char* kFooter = R"(
Inputs: JSON lines (one {"id", "title", "text", "metadata", "pooled", "tokens",
"token_texts"} object per line), a BEIR folder (corpus.jsonl with _id, title,
text), a TEXMEX .fvecs file (pooled vectors; id = row number), or a folder of
NumPy arrays (tokens.npy, offsets.npy or lengths.npy, ids.npy or ids.txt, and
optionally pooled.npy and docs.jsonl with text and metadata by id: see
indexer/README.md). Gzip input is read directly. Every document needs text (title and/or text) and/or vectors
(pooled and/or tokens). Text-only documents are encoded by the collection's
built-in encoder, which the load trains at its end (--train_encoder auto:
when the input had text-only documents and the encoder is untrained). A new
collection gets the dim its first record states unless --dim is given (256
for text-only input, which also gets int8 token storage unless --dtype is
given). JSON lines are parsed (npy converted) by --threads threads, in input
order.

Bad records (bad JSON, a wrong dimension, an empty document, one the engine
rejects, ...) are reported as FILE:LINE: reason (FILE:record N for fvecs,
FOLDER:document N for npy),
written to the rejects file (a JSON line each: location, position, id,
reason) and skipped: the load goes on, and the encoder is trained on what
loaded. --max_errors N stops the load at the (N+1)th instead. Re-running the
same command after an interruption resumes from the checkpoint; --restart
starts over.

Exit codes:
  0  success: every record loaded
  1  usage error (bad flags, or a collection that contradicts them)
  2  the load stopped early on its input: more than --max_errors bad records,
     or an unreadable / truncated input (what loaded stays stored; re-run to
     resume)
  3  server or engine error (what was acknowledged stays stored; re-run to
     resume)
  4  done, with bad records rejected: every good record loaded, the bad ones
     listed in the rejects file
)";

}  // namespace

int main(int argc, char** argv) {
  // A load allocates and frees blocks of lines and documents of the same
  // sizes again and again: freed memory is kept for reuse rather than
  // returned to the kernel and faulted in again (a few percent of a load's
  // CPU on a virtual machine, where the first touch of a page is dear).
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  ai::IndexerOptions o;
  std::string format = "auto", dtype, progress = "auto", train_encoder = "auto";
  double batch_mb = 4, inflight_mb = 32;

  CLI::App app{"attnsearch-index: load documents into an attnsearch collection"};
  app.footer(kFooter);
  app.add_option("input", o.input, "JSON lines file, BEIR folder or .fvecs file (or gzip)");
  app.add_option("--input", o.input, "same as the positional argument");
  app.add_option("--collection", o.collection, "target collection (created when missing)")
      ->required();
  auto* data_dir = app.add_option("--data_dir", o.data_dir,
                                  "offline: load in-process into this data directory (the "
                                  "server must not be running on it)");
  auto* server =
      app.add_option("--server", o.server, "online: HOST:PORT of a running attnsearch-server");
  data_dir->excludes(server);
  app.add_option("--api_key_file", o.api_key_file,
                 "online: file holding the server's API key (default: the environment "
                 "variable ATTNSEARCH_API_KEY)")
      ->excludes(data_dir);
  app.add_option("--tls_ca", o.tls_ca_file,
                 "online: connect with TLS, trusting the PEM certificates in this file")
      ->excludes(data_dir);
  app.add_option("--format", format, "auto, jsonl, beir, fvecs or npy")
      ->check(CLI::IsMember({"auto", "jsonl", "beir", "fvecs", "npy"}))
      ->capture_default_str();
  app.add_option("--dim", o.dim,
                 "vector dimension, to create the collection (default: the first record's; "
                 "text-only input: 256)");
  app.add_option("--threads", o.threads,
                 "JSON lines and npy: threads parsing or converting records beside the one "
                 "reading the input (0: one per core)")
      ->capture_default_str();
  app.add_option("--dtype", dtype,
                 "token storage when creating: bf16, f32 or int8 (default bf16; int8 for "
                 "text-only input)")
      ->check(CLI::IsMember({"bf16", "f32", "int8"}));
  app.add_option("--ann_spec", o.ann_spec, "FAISS factory string when creating")
      ->capture_default_str();
  std::string token_codec = "rows";
  app.add_option("--token_codec", token_codec,
                 "how the server holds token matrices in memory, when creating: rows (as "
                 "stored) or residual (a centroid id and --code_bits per dimension, trained "
                 "at the end of an offline load)")
      ->check(CLI::IsMember({"rows", "residual"}))
      ->capture_default_str();
  std::string candidates_from = "pooled";
  app.add_option("--candidates_from", candidates_from,
                 "where searches take their candidates, when creating: pooled (the ANN index "
                 "over pooled vectors), centroids (late interaction over the residual "
                 "codec's centroids; needs --token_codec residual) or fde (the ANN index over "
                 "fixed dimensional encodings of the token sets)")
      ->check(CLI::IsMember({"pooled", "centroids", "fde"}))
      ->capture_default_str();
  app.add_option("--code_bits", o.token_codec.bits, "residual codec: bits per dimension, 1, 2 or 4")
      ->check(CLI::IsMember({1, 2, 4}))
      ->capture_default_str();
  app.add_option("--exact_tier", o.token_codec.keep_full_precision,
                 "residual codec: keep the full-precision rows and re-score each search's best "
                 "candidates from them (keep_full_precision); false: keep only codes")
      ->capture_default_str();
  app.add_option("--code_train_after", o.token_codec.train_after,
                 "residual codec: documents stored before it trains itself; offline with "
                 "--exact_tier false it trains then and the rest of the load stores codes alone "
                 "(0: offline at the end of the load, online only on a TrainCodec call)")
      ->capture_default_str();
  std::string numeric_fields;
  app.add_option("--numeric_fields", numeric_fields,
                 "metadata keys whose values are numbers (filterable by range), comma "
                 "separated, when creating");
  app.add_option("--batch", o.batch_documents, "documents per batch (1..10000)")
      ->capture_default_str();
  app.add_option("--batch_mb", batch_mb, "bytes per batch / gRPC message, in MiB")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--max_inflight_mb", inflight_mb,
                 "online: unacknowledged data in flight at most, in MiB")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--streams", o.max_streams,
                 "online: UpsertStreams in flight at once (1..8): a stream closes after "
                 "--max_inflight_mb / --streams and the next one is written while the server "
                 "applies it")
      ->check(CLI::Range(1, 8))
      ->capture_default_str();
  app.add_option("--retries", o.max_retries,
                 "online: retries of UNAVAILABLE (exponential "
                 "backoff from --backoff_ms)")
      ->capture_default_str();
  app.add_option("--backoff_ms", o.initial_backoff_ms, "online: first retry backoff")
      ->capture_default_str();
  app.add_option("--train_encoder", train_encoder,
                 "train the built-in text encoder at the end: auto (when text-only documents "
                 "were loaded, the load reached the end of its input and the encoder is "
                 "untrained), always, never")
      ->check(CLI::IsMember({"auto", "always", "never"}))
      ->capture_default_str();
  app.add_option("--semantic_share", o.encoder.semantic_share,
                 "encoder: share of meaning vs exact words in a word vector, in (0, 1] (0: the "
                 "default, 0.6)")
      ->capture_default_str();
  app.add_option("--wordnet_weight", o.encoder.wordnet_weight,
                 "encoder: how far word vectors move towards their WordNet relatives "
                 "(/usr/share/wordnet, Debian's wordnet-base), and whether rare words ask for "
                 "them (0: the default, 1.0; negative: off)")
      ->capture_default_str();
  app.add_option("--stem_language", o.encoder.stem_language,
                 "encoder: Snowball stemmer (english, german, ...) or none (empty: english)");
  app.add_option("--target_recall", o.target_recall,
                 "after a load that reached the end of its input, tune the collection's "
                 "default ANN search knob (efSearch/nprobe) for this mean recall@10, in [0, 1] "
                 "(0: off)")
      ->capture_default_str();
  uint64_t max_errors = 0;
  auto* max_errors_opt = app.add_option(
      "--max_errors", max_errors,
      "stop once more than N bad records were found (0: at the first; default: no limit, "
      "every bad record is reported, listed in the rejects file and skipped)");
  app.add_option("--rejects", o.rejects,
                 "the rejects file: a JSON line per bad record (default: the checkpoint's path "
                 "with .rejects.jsonl for .progress)");
  app.add_option("--checkpoint", o.checkpoint,
                 "checkpoint file (default <data_dir>/<collection>.<input>.progress offline, "
                 "./<collection>.<input>.progress online)");
  app.add_flag("--restart", o.restart, "ignore the checkpoint and start over");
  app.add_option("--checkpoint_every", o.checkpoint_every,
                 "offline: flush and checkpoint every N documents (1 or more)")
      ->check(CLI::Range(uint64_t{1}, uint64_t{1} << 40))
      ->capture_default_str();
  app.add_option("--limit", o.limit, "load at most N documents, then stop (0: all)");
  app.add_option("--stop_after", o.stop_after,
                 "testing: SIGKILL itself once N documents were written (a crash)");
  app.add_option("--progress", progress, "auto (bar on a terminal, else lines), bar, plain, off")
      ->check(CLI::IsMember({"auto", "bar", "plain", "off"}))
      ->capture_default_str();
  app.add_option("--progress_seconds", o.progress_seconds,
                 "interval of plain progress lines (0.1 to 86400)")
      ->check(CLI::Range(0.1, 86400.0))
      ->capture_default_str();

  if (const std::optional<int> done = attnsearch::ParseFlags(app, argc, argv, ai::kExitUsage)) {
    return *done;
  }
  if (std::isnan(o.progress_seconds)) {  // CLI11's range lets NaN through
    std::fprintf(stderr, "--progress_seconds: not a number\n");
    return ai::kExitUsage;
  }
  if (max_errors_opt->count() > 0) o.max_errors = max_errors;
  if (!numeric_fields.empty()) {
    o.numeric_fields = absl::StrSplit(numeric_fields, ',');
    for (const std::string& field : o.numeric_fields) {
      if (field.empty()) {
        std::fprintf(stderr,
                     "--numeric_fields: an empty name in '%s' (names are comma separated)\n",
                     numeric_fields.c_str());
        return ai::kExitUsage;
      }
    }
  }
  for (const char* flag :
       {"--dtype", "--ann_spec", "--numeric_fields", "--token_codec", "--candidates_from",
        "--code_bits", "--exact_tier", "--code_train_after"}) {
    if (app.count(flag) > 0) o.creation_flags.push_back(flag);
  }
  ai::ParseInputFormat(format, &o.format);
  if (token_codec == "residual") o.token_codec.kind = attnsearch::TokenCodecKind::kResidual;
  o.candidates_from =
      attnsearch::ParseCandidateSource(candidates_from, "--candidates_from").value();
  if (!dtype.empty()) {
    o.dtype = dtype == "f32"    ? attnsearch::TokenDtype::kF32
              : dtype == "int8" ? attnsearch::TokenDtype::kInt8
                                : attnsearch::TokenDtype::kBF16;
  }
  o.progress = progress == "bar"     ? ai::ProgressMode::kBar
               : progress == "plain" ? ai::ProgressMode::kPlain
               : progress == "off"   ? ai::ProgressMode::kOff
                                     : ai::ProgressMode::kAuto;
  o.train_encoder = train_encoder == "always"  ? ai::TrainEncoderMode::kAlways
                    : train_encoder == "never" ? ai::TrainEncoderMode::kNever
                                               : ai::TrainEncoderMode::kAuto;
  o.batch_bytes = size_t(batch_mb * (1 << 20));
  o.max_inflight_bytes = size_t(inflight_mb * (1 << 20));
  return ai::RunIndexer(o);
}
