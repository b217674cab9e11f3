// Base64Decode / Base64UrlDecode on arbitrary text. Beyond "no crash": the decoders
// are strict (base64.h), so whatever they accept must be the canonical encoding of
// what they return, and every byte string must survive encode -> decode.
#include <string>

#include "src/common/base64.h"
#include "tests/fuzz/fuzz_targets.h"
#include "tests/fuzz/fuzz_util.h"

namespace kms::fuzz {

int FuzzBase64(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);

  if (auto std_decoded = Base64Decode(text); std_decoded.ok()) {
    std::string canonical = Base64Encode(*std_decoded);
    // Accepted: the padded encoding, or the same without its '='.
    std::string unpadded = canonical.substr(0, canonical.find('='));
    FUZZ_CHECK(text == canonical || text == unpadded);
  } else {
    FUZZ_CHECK(std_decoded.status().code() == absl::StatusCode::kInvalidArgument);
  }

  if (auto url_decoded = Base64UrlDecode(text); url_decoded.ok()) {
    FUZZ_CHECK(text == Base64UrlEncode(*url_decoded));
  } else {
    FUZZ_CHECK(url_decoded.status().code() == absl::StatusCode::kInvalidArgument);
  }

  // The input as bytes: both encodings round-trip.
  const std::span<const uint8_t> bytes(data, size);
  auto back = Base64Decode(Base64Encode(bytes));
  FUZZ_CHECK(back.ok() && std::equal(back->begin(), back->end(), bytes.begin(), bytes.end()));
  auto url_back = Base64UrlDecode(Base64UrlEncode(bytes));
  FUZZ_CHECK(url_back.ok() &&
             std::equal(url_back->begin(), url_back->end(), bytes.begin(), bytes.end()));
  return 0;
}

}  // namespace kms::fuzz
