// tokenizer/unicode.cpp — see unicode.h. Pure functions over constant tables: thread-safe.
#include "tokenizer/unicode.h"

#include <array>

namespace moe::tok {

uint8_t cpt_flags(uint32_t cp) noexcept {
  if (cp > 0x10FFFF) return kC;
  // Binary search for the last run starting at or before cp (the first run starts at 0).
  size_t lo = 0, hi = kCategoryRangesCount;
  while (hi - lo > 1) {
    size_t mid = (lo + hi) / 2;
    if (kCategoryRanges[mid].start <= cp) lo = mid;
    else hi = mid;
  }
  return kCategoryRanges[lo].flags;
}

std::vector<uint32_t> decode_utf8(std::string_view s) {
  std::vector<uint32_t> out;
  out.reserve(s.size());
  const auto* p = reinterpret_cast<const uint8_t*>(s.data());
  const size_t n = s.size();
  size_t i = 0;
  auto cont = [&](size_t k) { return i + k < n && (p[i + k] & 0xC0) == 0x80; };
  while (i < n) {
    const uint8_t b = p[i];
    if (b < 0x80) {
      out.push_back(b);
      i += 1;
    } else if ((b & 0xE0) == 0xC0 && cont(1)) {
      out.push_back((uint32_t(b & 0x1F) << 6) | (p[i + 1] & 0x3F));
      i += 2;
    } else if ((b & 0xF0) == 0xE0 && cont(1) && cont(2)) {
      out.push_back((uint32_t(b & 0x0F) << 12) | (uint32_t(p[i + 1] & 0x3F) << 6) | (p[i + 2] & 0x3F));
      i += 3;
    } else if ((b & 0xF8) == 0xF0 && cont(1) && cont(2) && cont(3)) {
      uint32_t cp = (uint32_t(b & 0x07) << 18) | (uint32_t(p[i + 1] & 0x3F) << 12) |
                    (uint32_t(p[i + 2] & 0x3F) << 6) | (p[i + 3] & 0x3F);
      out.push_back(cp <= 0x10FFFF ? cp : 0xFFFD);
      i += 4;
    } else {
      out.push_back(0xFFFD);
      i += 1;
    }
  }
  return out;
}

namespace {
// GPT-2's bytes_to_unicode: printable Latin-1 bytes map to themselves, the other 68 bytes to
// U+0100.. in byte order.
struct ByteMap {
  std::array<uint32_t, 256> to_cpt{};
  std::array<int, 68> remapped{};  // code point 256 + k -> byte
  ByteMap() {
    uint32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      if (printable) {
        to_cpt[b] = static_cast<uint32_t>(b);
      } else {
        remapped[next - 256] = b;
        to_cpt[b] = next++;
      }
    }
  }
};
const ByteMap& byte_map() {
  static const ByteMap m;
  return m;
}
}  // namespace

uint32_t byte_to_cpt(uint8_t b) noexcept { return byte_map().to_cpt[b]; }

int cpt_to_byte(uint32_t cp) noexcept {
  if (cp < 256) {
    const auto& m = byte_map();
    return m.to_cpt[cp] == cp ? static_cast<int>(cp) : -1;
  }
  if (cp < 256 + 68) return byte_map().remapped[cp - 256];
  return -1;
}

}  // namespace moe::tok
