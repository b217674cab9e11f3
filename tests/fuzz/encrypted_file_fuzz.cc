// The encrypted file format v1 (docs/datakeys.md; src/crypto/file_stream.h), as
// `kmsctl decrypt-file` reads a file someone handed it: crypto::ReadFileHeader, then
// crypto::DecryptFileStream of the segments that follow under the fixed fuzz key.
// Invariants: a refused header is INVALID_ARGUMENT; an accepted one is within the
// format's limits, context sorted and unique, and encodes back to exactly the bytes
// read (one header, one encoding); the segments fail only with DATA_LOSS and never
// yield more plaintext than input; a file that decrypts is what EncryptFileStream makes
// of its plaintext under that header (nonces come from the header's prefix).
#include <string>
#include <vector>

#include "kms/common/secret.h"
#include "src/crypto/file_stream.h"
#include "tests/fuzz/fuzz_targets.h"
#include "tests/fuzz/fuzz_util.h"

namespace kms::fuzz {

int FuzzEncryptedFile(const uint8_t* data, size_t size) {
  const std::string input(AsText({data, size}));
  crypto::StringSource in(input);
  std::vector<uint8_t> raw;
  absl::StatusOr<crypto::FileHeader> header = crypto::ReadFileHeader(in, &raw);
  if (!header.ok()) {
    FUZZ_CHECK(header.status().code() == absl::StatusCode::kInvalidArgument);
    return 0;
  }
  FUZZ_CHECK(raw.size() <= size);
  FUZZ_CHECK(raw.size() <= crypto::kFilePrefixSize + crypto::kMaxFileHeaderBody);
  FUZZ_CHECK(header->segment_size >= crypto::kMinSegmentSize &&
             header->segment_size <= crypto::kMaxSegmentSize);
  FUZZ_CHECK(!header->key_name.empty() && !header->wrapped_key.empty());
  for (size_t i = 1; i < header->context.size(); ++i) {
    FUZZ_CHECK(header->context[i - 1].first < header->context[i].first);
  }
  absl::StatusOr<std::vector<uint8_t>> encoded = crypto::EncodeFileHeader(*header);
  FUZZ_CHECK(encoded.ok());
  FUZZ_CHECK(*encoded == raw);

  const SecretBytes key = SecretBytes::CopyOf(std::span(kFieldKeyBytes));
  crypto::StringSink plaintext;
  const absl::Status opened = crypto::DecryptFileStream(*header, raw, key, in, plaintext);
  FUZZ_CHECK(opened.ok() || opened.code() == absl::StatusCode::kDataLoss);
  FUZZ_CHECK(plaintext.data().size() <= size);
  if (!opened.ok()) return 0;

  crypto::StringSource again(plaintext.data());
  crypto::StringSink sealed;
  FUZZ_CHECK(crypto::EncryptFileStream(*header, key, again, sealed).ok());
  FUZZ_CHECK(sealed.data() == input);
  return 0;
}

}  // namespace kms::fuzz
