// I-JSON (RFC 7493): the JSON that every conforming implementation reads the same way.
// JWT claims must be I-JSON (RFC 7519 §7.2 step 8 points at RFC 7159's interoperability
// rules; RFC 7493 makes them MUSTs), so kmsd signs only claims whose meaning no verifier
// can read differently from how kmsd checked them.
//
// CheckIJson refuses, as INVALID_ARGUMENT with a message that names the kind of problem
// and never an input byte:
//  - text that is not JSON (RFC 8259), including invalid UTF-8 and escaped lone
//    surrogates (\ud800 without its pair);
//  - an object with a duplicate member name (RFC 7493 §2.3), at any depth;
//  - a string (member name or value) holding a noncharacter (U+FDD0..U+FDEF, U+xFFFE,
//    U+xFFFF; RFC 7493 §2.1);
//  - an integer (a number written without fraction or exponent) outside
//    [-(2^53 - 1), 2^53 - 1] (RFC 7493 §2.2): beyond it, double-based parsers (JavaScript,
//    many JWT libraries) read another number;
//  - a number with a fraction or exponent that an IEEE 754 double does not hold
//    faithfully: not finite after parsing (1e400), or whose significant decimal digits
//    differ from the shortest round-trip form of the double it parses to
//    (0.10000000000000000001, 1e-400). "1.5", "0.1", "1e300" are faithful;
//  - nesting deeper than `max_depth` objects/arrays.
// Thread-safe (pure function); never throws.
#pragma once

#include <string_view>

#include "kms/common/status.h"

namespace kms::jwt {

// The largest integer every double-based JSON reader holds exactly: 2^53 - 1.
inline constexpr int64_t kMaxSafeInteger = (int64_t{1} << 53) - 1;

absl::Status CheckIJson(std::string_view text, int max_depth);

}  // namespace kms::jwt
