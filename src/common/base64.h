// Base64 (RFC 4648 §4) and base64url (RFC 4648 §5), strict.
//
// Decoders reject anything that is not the canonical encoding of some byte string:
// characters outside the alphabet (including whitespace), a length that no encoding
// has, misplaced or excess '=', and non-zero unused bits in the last character. So
// every byte string has exactly one accepted encoding (plus, for standard base64, its
// unpadded form), which keeps tokens and stored values non-malleable.
//
// Encoding and decoding avoid secret-dependent branches and table lookups, since the
// input may be key material. Error messages never echo the input. Thread-safe.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "kms/common/status.h"

namespace kms {

// Standard alphabet, with '=' padding.
std::string Base64Encode(std::span<const uint8_t> bytes);
// Standard alphabet; accepts the padded form and the form without padding.
// INVALID_ARGUMENT otherwise.
absl::StatusOr<std::vector<uint8_t>> Base64Decode(std::string_view text);

// URL- and filename-safe alphabet ('-', '_'), no padding (as JWS, RFC 7515 §2, wants).
std::string Base64UrlEncode(std::span<const uint8_t> bytes);
// URL-safe alphabet, no padding: '=' is rejected. INVALID_ARGUMENT otherwise.
absl::StatusOr<std::vector<uint8_t>> Base64UrlDecode(std::string_view text);

}  // namespace kms
