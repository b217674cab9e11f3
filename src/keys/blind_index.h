// Blind indexes: a keyed hash of a normalized value, so that a caller can look up a row
// by an encrypted field (find the user by email) without kmsd decrypting anything and
// without the caller holding a key.
//
//   index = HMAC-SHA256(index key, "kmsd:bidx:v1" ‖ len32(normalization) ‖ normalization
//                                  ‖ normalized value)          (32 bytes)
//
// The index key is per key set (tenant or named key), never leaves kmsd, and is kept
// like a DEK: a random 32-byte key wrapped under the KEK ring, in the row "bidx:" + the
// key set's row id (key_ref.h), with versions of its own (not the key set's DEK
// versions). Binding the normalization's name keeps an email's index apart from the
// same bytes indexed as "exact". Equal inputs give equal indexes (that is the point:
// an equality look-up), so a blind index reveals which rows share a value; it reveals
// nothing else without the key.
//
// Normalizations (Normalize), named per field kind:
//   email  ASCII whitespace trimmed, ASCII letters lower-cased; must have one '@' with
//          something on both sides. (No Unicode case folding, no IDNA.)
//   phone  E.164: "+" then 7-15 digits; spaces, '-', '.', '(' and ')' are dropped, a
//          leading "00" is read as "+". A number without "+" or "00" is refused: its
//          country cannot be known.
//   ip     the canonical text of an IPv4 or IPv6 address (inet_ntop: IPv6 compressed
//          and lower-case as RFC 5952 §4 says); an IPv4-mapped IPv6 address
//          (::ffff:a.b.c.d) is the IPv4 address.
//   exact  the bytes as given.
#pragma once

#include <array>
#include <span>
#include <string>
#include <string_view>

#include "kms/common/secret.h"
#include "kms/common/status.h"

namespace kms::keys {

inline constexpr size_t kBlindIndexSize = 32;
using BlindIndex = std::array<uint8_t, kBlindIndexSize>;

// The normalized value, or INVALID_ARGUMENT: "unknown normalization" (naming the
// accepted ones), an empty value, or a value that is not of that kind (the message
// names the kind, never the value).
absl::StatusOr<std::string> NormalizeForIndex(std::string_view normalization,
                                              std::string_view value);

// The index of an already normalized value under `index_key` (32 bytes).
absl::StatusOr<BlindIndex> ComputeBlindIndex(const SecretBytes& index_key,
                                             std::string_view normalization,
                                             std::string_view normalized);

}  // namespace kms::keys
