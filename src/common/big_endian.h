// Big-endian integers and length-prefixed byte strings: the pieces kmsd's byte formats
// are built from (the field ciphertext header and AAD in src/crypto/field_cipher.h, the
// wrapped-DEK blob and AAD in src/keys/wrapped_dek.h, the JWT key AAD in
// src/jwt/jwt_service.h). Those headers document their layouts; these helpers only write
// and read the fields, so a format is changed there, never here. Header-only; pure
// functions, thread-safe.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <span>
#include <string_view>
#include <vector>

namespace kms {

// Appends `v` as 4 bytes, most significant first.
inline void AppendU32(std::vector<uint8_t>& out, uint32_t v) {
  out.push_back(static_cast<uint8_t>(v >> 24));
  out.push_back(static_cast<uint8_t>(v >> 16));
  out.push_back(static_cast<uint8_t>(v >> 8));
  out.push_back(static_cast<uint8_t>(v));
}

// Appends `bytes` as they are (a label, a value whose length is implied by the format).
inline void AppendBytes(std::vector<uint8_t>& out, std::string_view bytes) {
  out.insert(out.end(), bytes.begin(), bytes.end());
}
inline void AppendBytes(std::vector<uint8_t>& out, std::span<const uint8_t> bytes) {
  out.insert(out.end(), bytes.begin(), bytes.end());
}

// Appends u32be(bytes.size()) ‖ bytes, so that adjacent variable-length fields cannot
// run into each other ("a"‖"bc" and "ab"‖"c" differ). `bytes` must be shorter than
// 4 GiB: callers bound their inputs (tenant ids, key ids, context entries) long before,
// so a longer one is a bug, and the process aborts rather than write an ambiguous prefix.
inline void AppendLengthPrefixed(std::vector<uint8_t>& out, std::string_view bytes) {
  if (bytes.size() > std::numeric_limits<uint32_t>::max()) {
    std::fputs("kmsd: bug: length-prefixed field of 4 GiB or more\n", stderr);
    std::abort();
  }
  AppendU32(out, static_cast<uint32_t>(bytes.size()));
  AppendBytes(out, bytes);
}

// Writes `v` into exactly 4 bytes, most significant first.
inline void StoreU32(std::span<uint8_t, 4> out, uint32_t v) {
  out[0] = static_cast<uint8_t>(v >> 24);
  out[1] = static_cast<uint8_t>(v >> 16);
  out[2] = static_cast<uint8_t>(v >> 8);
  out[3] = static_cast<uint8_t>(v);
}

// Reads 4 bytes, most significant first.
inline uint32_t LoadU32(std::span<const uint8_t, 4> in) {
  return (uint32_t{in[0]} << 24) | (uint32_t{in[1]} << 16) | (uint32_t{in[2]} << 8) |
         uint32_t{in[3]};
}

}  // namespace kms
