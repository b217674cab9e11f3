// Reading a small secret (a PIN, a password, a private key) from an operator-supplied
// file straight into zeroizing memory: the bytes never pass through a std::string, a
// stream buffer or an unwiped stack copy.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "kms/common/secret.h"

namespace kms {

// What to drop around the secret. "Whitespace" is ASCII: space, \t, \n, \v, \f, \r.
enum class SecretFileTrim {
  kNone,                   // the bytes as stored (a PEM key)
  kTrailingLineBreaks,     // trailing '\n' and '\r' only: the secret may end in a space
  kTrailingWhitespace,     // trailing whitespace (a PIN)
  kSurroundingWhitespace,  // leading and trailing whitespace
};

// The contents of the regular file at `path`, at most `max_bytes` long, with `trim`
// applied. The file is opened without following it into a FIFO or a device (those are
// refused, not read) and read with a bounded, EINTR-safe loop; a file that grows past
// `max_bytes` while being read is refused too.
//
// Errors name `what` and the path ("<what> file <path>: ..."), never the contents:
// NOT_FOUND (no such file), PERMISSION_DENIED (EACCES), INVALID_ARGUMENT (not a regular
// file, larger than `max_bytes`, empty after trimming), FAILED_PRECONDITION (any other
// open or read failure). Thread-safe.
absl::StatusOr<SecretBytes> ReadSecretFile(
    const std::string& path, std::string_view what, size_t max_bytes,
    SecretFileTrim trim = SecretFileTrim::kTrailingWhitespace);

}  // namespace kms
