// Construction of FAISS's HNSW graph scored by the SIMD kernels.
//
// FAISS's own IndexHNSW::add reaches the vectors through three virtual calls
// per distance and builds with its generic heaps; this inserts into the same
// faiss::HNSW structure (levels, offsets, neighbour lists, entry point), so
// the result is an ordinary FAISS index: it serialises, loads and searches
// as FAISS's does. The algorithm is HNSW's: a random level per point; greedy
// descent through the levels above it; at each of its levels a beam search
// of width efConstruction, the neighbour-selection heuristic (keep a
// candidate only if it is closer to the new point than to every neighbour
// already kept), and reverse links, re-selected by the same heuristic when a
// neighbour's list is full. Points are inserted highest level first, in
// parallel (OpenMP), with one lock per node.
#ifndef ATTNSEARCH_ANN_HNSW_BUILD_H_
#define ATTNSEARCH_ANN_HNSW_BUILD_H_

#include <faiss/IndexHNSW.h>

#include <cstddef>

namespace attnsearch {

// Whether AddToHnsw can build `index` (its storage is a SIMD storage index
// with the inner-product metric; see simd_storage.h).
bool CanBuildWithSimd(const faiss::IndexHNSW& index);

// Adds n vectors x (n x d) to `index`: appends them to its storage, then
// links them into the graph. REQUIRES: CanBuildWithSimd(index), trained.
void AddToHnsw(faiss::IndexHNSW& index, size_t n, const float* x);

}  // namespace attnsearch

#endif  // ATTNSEARCH_ANN_HNSW_BUILD_H_
