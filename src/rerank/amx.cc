#include "rerank/amx.h"

#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cctype>
#include <cstdlib>
#include <string>

namespace attnsearch {

const AmxTileConfig kAmxTileConfig;

namespace {

bool CpuHas(AmxKind kind) {
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
  const bool avx512 = (b >> 16 & 1) && (b >> 30 & 1);  // F, BW
  const bool tile = d >> 24 & 1;                       // AMX-TILE
  const bool unit = kind == AmxKind::kBf16 ? (d >> 22 & 1) : (d >> 25 & 1);
  return avx512 && tile && unit;
}

bool AllowedByIsaCap() {
  const char* cap = std::getenv("ONEDNN_MAX_CPU_ISA");
  if (cap == nullptr || *cap == 0) return true;
  std::string s(cap);
  for (char& ch : s) ch = char(std::toupper(static_cast<unsigned char>(ch)));
  return s == "ALL" || s == "DEFAULT" || s.find("AMX") != std::string::npos;
}

// Linux hands out the tile state on request (ARCH_REQ_XCOMP_PERM,
// XFEATURE_XTILEDATA), for the whole process; oneDNN asks the same.
bool TileStateGranted() {
  static const bool granted = syscall(SYS_arch_prctl, 0x1023, 18) == 0;
  return granted;
}

}  // namespace

bool AmxUsable(AmxKind kind) {
  static const bool bf16 = CpuHas(AmxKind::kBf16) && AllowedByIsaCap() && TileStateGranted();
  static const bool int8 = CpuHas(AmxKind::kInt8) && AllowedByIsaCap() && TileStateGranted();
  return kind == AmxKind::kBf16 ? bf16 : int8;
}

}  // namespace attnsearch
