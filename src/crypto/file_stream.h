// Encrypted file format v1 (kmsctl encrypt-file / decrypt-file): a file or pipe of any
// size encrypted in fixed-size segments with a fresh data key per file, readable and
// writable in constant memory. The construction is the "STREAM" online AEAD of Hoang,
// Reyhanitabar, Rogaway and Vizár (CRYPTO 2015) as Tink's AES-GCM-HKDF streaming AEAD
// and age's payload use it: each segment is sealed with AES-256-GCM under a nonce made
// of a per-file random prefix, the segment's index and a last-segment flag, so that a
// reader detects reordered, dropped, duplicated, spliced and truncated segments.
//
// Layout (all integers big-endian; len32(x) = u32 length ‖ x):
//
//   offset  size  field
//   0       8     magic "KMSDFILE"
//   8       1     format version = 0x01
//   9       4     H: length of the header body that follows (at most 1 MiB)
//   13      H     header body:
//                   u32   segment size S: plaintext bytes per segment (4 KiB .. 16 MiB)
//                   u8    key kind: 1 = tenant, 2 = named key
//                   len32 key name (the tenant id or the named key's name)
//                   u32   context pair count, then per pair, sorted by key bytewise:
//                         len32(key) ‖ len32(value)
//                   len32 wrapped data key (a kmsd field ciphertext: DecryptDataKey
//                         with this key and context gives the 32-byte data key)
//                   7     nonce prefix (random per file)
//   13+H    ...   segments 0, 1, ..., n-1
//
// Segment i is AES-256-GCM(data key, nonce, AAD) of its plaintext, written as
// ciphertext ‖ tag (16 bytes), where
//   nonce = nonce prefix (7) ‖ u32(i) ‖ u8(1 if i = n-1 else 0)
//   AAD   = SHA-256(bytes 0 .. 13+H of the file)   (the header binds every segment)
// Every segment but the last carries exactly S plaintext bytes; the last carries 0..S
// (an empty input is one empty last segment). There are at most 2^32 segments.
//
// Why this detects what it must: a segment moved to another position fails (its index
// is in the nonce); a file cut at a segment boundary ends with a segment sealed as
// "not last", which fails when read as the last; bytes appended after the last segment
// make it "not last", which fails; a segment from another file fails (another data key
// and header). A byte flipped anywhere fails a tag (or, in the header, the AAD of every
// segment, or the unwrap of the data key in kmsd). The data key is fresh for each file,
// so nonces never repeat under one key and no key derivation is needed (Tink derives a
// per-file key because its key is long-lived).
//
// Reading is online: a segment's plaintext is released only after its tag verified, but
// a truncated or tampered file is detected only when the bad segment is reached.
// Callers that write to a file therefore write a temporary file and rename it on
// success (kmsctl does); a pipe reader must discard output when the status fails.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "kms/common/secret.h"
#include "kms/common/status.h"

namespace kms::crypto {

inline constexpr char kFileMagic[8] = {'K', 'M', 'S', 'D', 'F', 'I', 'L', 'E'};
inline constexpr uint8_t kFileFormatV1 = 0x01;
inline constexpr size_t kFilePrefixSize = 13;  // magic, version, H
inline constexpr size_t kFileNoncePrefixSize = 7;
inline constexpr uint32_t kDefaultSegmentSize = 64 * 1024;
inline constexpr uint32_t kMinSegmentSize = 4 * 1024;
inline constexpr uint32_t kMaxSegmentSize = 16 * 1024 * 1024;
inline constexpr uint32_t kMaxFileHeaderBody = 1024 * 1024;
inline constexpr size_t kFileDataKeySize = 32;

enum class FileKeyKind : uint8_t { kTenant = 1, kNamedKey = 2 };

// What the header says. `context` is kept sorted by key.
struct FileHeader {
  uint32_t segment_size = kDefaultSegmentSize;
  FileKeyKind key_kind = FileKeyKind::kNamedKey;
  std::string key_name;
  std::vector<std::pair<std::string, std::string>> context;
  std::string wrapped_key;
  std::array<uint8_t, kFileNoncePrefixSize> nonce_prefix{};
};

// Where bytes come from and go to: a file descriptor, a pipe or memory.
class ByteSource {
 public:
  virtual ~ByteSource() = default;
  // Reads up to out.size() bytes; 0 only at end of input. A status on a read error.
  virtual absl::StatusOr<size_t> Read(std::span<uint8_t> out) = 0;
};
class ByteSink {
 public:
  virtual ~ByteSink() = default;
  virtual absl::Status Write(std::span<const uint8_t> bytes) = 0;
};

// Reads and writes a file descriptor (retrying short reads/writes and EINTR).
class FdSource final : public ByteSource {
 public:
  explicit FdSource(int fd) : fd_(fd) {}
  absl::StatusOr<size_t> Read(std::span<uint8_t> out) override;

 private:
  int fd_;
};
class FdSink final : public ByteSink {
 public:
  explicit FdSink(int fd) : fd_(fd) {}
  absl::Status Write(std::span<const uint8_t> bytes) override;

 private:
  int fd_;
};

// Memory, for tests and small inputs.
class StringSource final : public ByteSource {
 public:
  explicit StringSource(std::string data) : data_(std::move(data)) {}
  absl::StatusOr<size_t> Read(std::span<uint8_t> out) override;

 private:
  std::string data_;
  size_t pos_ = 0;
};
class StringSink final : public ByteSink {
 public:
  absl::Status Write(std::span<const uint8_t> bytes) override {
    data_.append(reinterpret_cast<const char*>(bytes.data()), bytes.size());
    return absl::OkStatus();
  }
  const std::string& data() const { return data_; }

 private:
  std::string data_;
};

// Called after each segment with the plaintext bytes done so far.
using FileProgress = std::function<void(uint64_t plaintext_bytes)>;

// The header's bytes (prefix and body). INVALID_ARGUMENT for a segment size out of
// range, an empty key name or wrapped key, or a duplicate context key.
absl::StatusOr<std::vector<uint8_t>> EncodeFileHeader(const FileHeader& header);

// Reads exactly the header from `in`. INVALID_ARGUMENT "not a kmsd encrypted file" for
// a wrong magic, "unsupported ... version" for another version, and "malformed file
// header" for anything else that does not parse (a truncated header included).
// `raw` receives the header's bytes (for the AAD).
absl::StatusOr<FileHeader> ReadFileHeader(ByteSource& in, std::vector<uint8_t>* raw);

// Encrypts all of `in` to `out`: writes the header, then the segments. `data_key` is
// the 32-byte key (INVALID_ARGUMENT otherwise); the header's nonce prefix must be fresh
// (NewNoncePrefix). Memory: two segments. A read or write error stops it.
absl::Status EncryptFileStream(const FileHeader& header, const SecretBytes& data_key,
                               ByteSource& in, ByteSink& out, const FileProgress& progress = {});

// Decrypts the segments that follow a header read by ReadFileHeader (`raw` its bytes).
// DATA_LOSS "encrypted file is damaged: ..." at the first segment that fails (tampered,
// reordered, spliced, truncated, or followed by extra bytes); what was written to
// `out` before it must then be discarded. Memory: two segments.
absl::Status DecryptFileStream(const FileHeader& header, std::span<const uint8_t> raw,
                               const SecretBytes& data_key, ByteSource& in, ByteSink& out,
                               const FileProgress& progress = {});

// A fresh random nonce prefix.
absl::StatusOr<std::array<uint8_t, kFileNoncePrefixSize>> NewNoncePrefix();

}  // namespace kms::crypto
