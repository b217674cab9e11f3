#include "src/crypto/file_stream.h"

#include <errno.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "openssl/sha.h"
#include "src/common/big_endian.h"
#include "src/crypto/aes_gcm.h"

namespace kms::crypto {

namespace {

absl::Status Malformed() { return absl::InvalidArgumentError("malformed file header"); }

absl::Status Damaged(uint64_t segment, std::string_view why) {
  return absl::DataLossError(absl::StrCat("encrypted file is damaged: segment ", segment, " ",
                                          std::string(why)));
}

// Reads exactly out.size() bytes unless the input ends first; returns how many.
absl::StatusOr<size_t> ReadFull(ByteSource& in, std::span<uint8_t> out) {
  size_t got = 0;
  while (got < out.size()) {
    KMS_ASSIGN_OR_RETURN(size_t n, in.Read(out.subspan(got)));
    if (n == 0) break;
    got += n;
  }
  return got;
}

// A cursor over the header body.
class BodyReader {
 public:
  explicit BodyReader(std::span<const uint8_t> bytes) : bytes_(bytes) {}
  bool U8(uint8_t* v) {
    if (left() < 1) return false;
    *v = bytes_[pos_++];
    return true;
  }
  bool U32(uint32_t* v) {
    if (left() < 4) return false;
    *v = LoadU32(bytes_.subspan(pos_).first<4>());
    pos_ += 4;
    return true;
  }
  bool Bytes(size_t n, std::string* out) {
    if (left() < n) return false;
    out->assign(reinterpret_cast<const char*>(bytes_.data() + pos_), n);
    pos_ += n;
    return true;
  }
  bool LengthPrefixed(std::string* out) {
    uint32_t n = 0;
    return U32(&n) && Bytes(n, out);
  }
  size_t left() const { return bytes_.size() - pos_; }

 private:
  std::span<const uint8_t> bytes_;
  size_t pos_ = 0;
};

std::array<uint8_t, kAesGcmNonceSize> SegmentNonce(const FileHeader& header, uint32_t index,
                                                   bool last) {
  std::array<uint8_t, kAesGcmNonceSize> nonce{};
  std::copy(header.nonce_prefix.begin(), header.nonce_prefix.end(), nonce.begin());
  StoreU32(std::span<uint8_t, 4>(nonce.data() + kFileNoncePrefixSize, 4), index);
  nonce[kAesGcmNonceSize - 1] = last ? 1 : 0;
  return nonce;
}

std::array<uint8_t, SHA256_DIGEST_LENGTH> HeaderDigest(std::span<const uint8_t> raw) {
  std::array<uint8_t, SHA256_DIGEST_LENGTH> digest{};
  SHA256(raw.data(), raw.size(), digest.data());
  return digest;
}

absl::StatusOr<std::unique_ptr<AesGcmKey>> SegmentKey(const SecretBytes& data_key) {
  if (data_key.size() != kFileDataKeySize) {
    return absl::InvalidArgumentError("the data key must be 32 bytes");
  }
  return AesGcmKey::Create(data_key);
}

}  // namespace

absl::StatusOr<size_t> FdSource::Read(std::span<uint8_t> out) {
  while (true) {
    ssize_t n = ::read(fd_, out.data(), out.size());
    if (n >= 0) return static_cast<size_t>(n);
    if (errno == EINTR) continue;
    return absl::UnavailableError(absl::StrCat("read failed: ", std::strerror(errno)));
  }
}

absl::Status FdSink::Write(std::span<const uint8_t> bytes) {
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = ::write(fd_, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return absl::UnavailableError(absl::StrCat("write failed: ", std::strerror(errno)));
    done += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

absl::StatusOr<size_t> StringSource::Read(std::span<uint8_t> out) {
  const size_t n = std::min(out.size(), data_.size() - pos_);
  std::memcpy(out.data(), data_.data() + pos_, n);
  pos_ += n;
  return n;
}

absl::StatusOr<std::array<uint8_t, kFileNoncePrefixSize>> NewNoncePrefix() {
  std::array<uint8_t, kFileNoncePrefixSize> prefix{};
  KMS_RETURN_IF_ERROR(RandomBytes(prefix));
  return prefix;
}

absl::StatusOr<std::vector<uint8_t>> EncodeFileHeader(const FileHeader& header) {
  if (header.segment_size < kMinSegmentSize || header.segment_size > kMaxSegmentSize) {
    return absl::InvalidArgumentError("segment size must be between 4 KiB and 16 MiB");
  }
  if (header.key_name.empty()) return absl::InvalidArgumentError("the key name is empty");
  if (header.wrapped_key.empty()) return absl::InvalidArgumentError("the wrapped key is empty");
  if (header.key_kind != FileKeyKind::kTenant && header.key_kind != FileKeyKind::kNamedKey) {
    return absl::InvalidArgumentError("unknown key kind");
  }
  std::vector<std::pair<std::string, std::string>> context = header.context;
  std::sort(context.begin(), context.end());
  for (size_t i = 1; i < context.size(); ++i) {
    if (context[i].first == context[i - 1].first) {
      return absl::InvalidArgumentError("duplicate context key");
    }
  }
  std::vector<uint8_t> body;
  AppendU32(body, header.segment_size);
  body.push_back(static_cast<uint8_t>(header.key_kind));
  AppendLengthPrefixed(body, header.key_name);
  AppendU32(body, static_cast<uint32_t>(context.size()));
  for (const auto& [k, v] : context) {
    AppendLengthPrefixed(body, k);
    AppendLengthPrefixed(body, v);
  }
  AppendLengthPrefixed(body, header.wrapped_key);
  AppendBytes(body, std::span<const uint8_t>(header.nonce_prefix));
  if (body.size() > kMaxFileHeaderBody) return absl::InvalidArgumentError("file header too large");

  std::vector<uint8_t> out(kFileMagic, kFileMagic + sizeof(kFileMagic));
  out.push_back(kFileFormatV1);
  AppendU32(out, static_cast<uint32_t>(body.size()));
  AppendBytes(out, std::span<const uint8_t>(body));
  return out;
}

absl::StatusOr<FileHeader> ReadFileHeader(ByteSource& in, std::vector<uint8_t>* raw) {
  std::vector<uint8_t> prefix(kFilePrefixSize);
  KMS_ASSIGN_OR_RETURN(size_t got, ReadFull(in, prefix));
  if (got < sizeof(kFileMagic) ||
      std::memcmp(prefix.data(), kFileMagic, sizeof(kFileMagic)) != 0) {
    return absl::InvalidArgumentError("not a kmsd encrypted file");
  }
  if (got < kFilePrefixSize) return Malformed();
  if (prefix[8] != kFileFormatV1) {
    return absl::InvalidArgumentError(
        absl::StrCat("unsupported encrypted file version ", static_cast<int>(prefix[8])));
  }
  const uint32_t body_size = LoadU32(std::span<const uint8_t>(prefix).subspan(9).first<4>());
  if (body_size > kMaxFileHeaderBody) return Malformed();
  std::vector<uint8_t> body(body_size);
  KMS_ASSIGN_OR_RETURN(got, ReadFull(in, body));
  if (got < body_size) return Malformed();

  FileHeader header;
  BodyReader r(body);
  uint8_t kind = 0;
  uint32_t pairs = 0;
  std::string nonce_prefix;
  if (!r.U32(&header.segment_size) || !r.U8(&kind) || !r.LengthPrefixed(&header.key_name) ||
      !r.U32(&pairs)) {
    return Malformed();
  }
  if (header.segment_size < kMinSegmentSize || header.segment_size > kMaxSegmentSize ||
      (kind != 1 && kind != 2) || header.key_name.empty() || pairs > body_size / 8) {
    return Malformed();
  }
  header.key_kind = static_cast<FileKeyKind>(kind);
  for (uint32_t i = 0; i < pairs; ++i) {
    std::string k, v;
    if (!r.LengthPrefixed(&k) || !r.LengthPrefixed(&v)) return Malformed();
    // Sorted and unique, so that one context has one encoding.
    if (!header.context.empty() && !(header.context.back().first < k)) return Malformed();
    header.context.emplace_back(std::move(k), std::move(v));
  }
  if (!r.LengthPrefixed(&header.wrapped_key) || header.wrapped_key.empty() ||
      !r.Bytes(kFileNoncePrefixSize, &nonce_prefix) || r.left() != 0) {
    return Malformed();
  }
  std::copy(nonce_prefix.begin(), nonce_prefix.end(), header.nonce_prefix.begin());
  raw->assign(prefix.begin(), prefix.end());
  raw->insert(raw->end(), body.begin(), body.end());
  return header;
}

absl::Status EncryptFileStream(const FileHeader& header, const SecretBytes& data_key,
                               ByteSource& in, ByteSink& out, const FileProgress& progress) {
  KMS_ASSIGN_OR_RETURN(std::unique_ptr<AesGcmKey> key, SegmentKey(data_key));
  KMS_ASSIGN_OR_RETURN(std::vector<uint8_t> raw, EncodeFileHeader(header));
  const auto aad = HeaderDigest(raw);
  KMS_RETURN_IF_ERROR(out.Write(raw));

  const size_t s = header.segment_size;
  // Two plaintext buffers: the segment being sealed and the one read ahead, which
  // tells whether the first is the last. Plaintext buffers are wiped when freed.
  SecretBytes current(s), next(s);
  std::vector<uint8_t> sealed(s + kAesGcmTagSize);
  KMS_ASSIGN_OR_RETURN(size_t current_len, ReadFull(in, current.mutable_span()));
  uint64_t done = 0;
  for (uint64_t index = 0;; ++index) {
    size_t next_len = 0;
    if (current_len == s) {
      KMS_ASSIGN_OR_RETURN(next_len, ReadFull(in, next.mutable_span()));
    }
    const bool last = next_len == 0;
    if (index > UINT32_MAX) return absl::OutOfRangeError("input too large: more than 2^32 segments");
    const auto nonce = SegmentNonce(header, static_cast<uint32_t>(index), last);
    std::span<uint8_t> ct(sealed.data(), current_len + kAesGcmTagSize);
    KMS_RETURN_IF_ERROR(key->Encrypt(nonce, current.span().first(current_len), aad, ct));
    KMS_RETURN_IF_ERROR(out.Write(ct));
    done += current_len;
    if (progress) progress(done);
    if (last) return absl::OkStatus();
    std::swap(current, next);
    current_len = next_len;
  }
}

absl::Status DecryptFileStream(const FileHeader& header, std::span<const uint8_t> raw,
                               const SecretBytes& data_key, ByteSource& in, ByteSink& out,
                               const FileProgress& progress) {
  KMS_ASSIGN_OR_RETURN(std::unique_ptr<AesGcmKey> key, SegmentKey(data_key));
  const auto aad = HeaderDigest(raw);
  const size_t sealed_size = header.segment_size + kAesGcmTagSize;
  // The segment being opened and the next one: a segment is the last exactly when
  // nothing follows it.
  std::vector<uint8_t> current(sealed_size), next(sealed_size);
  SecretBytes plain(header.segment_size);
  KMS_ASSIGN_OR_RETURN(size_t current_len, ReadFull(in, current));
  uint64_t done = 0;
  for (uint64_t index = 0;; ++index) {
    if (current_len < kAesGcmTagSize) return Damaged(index, "is missing or truncated");
    size_t next_len = 0;
    if (current_len == sealed_size) {
      KMS_ASSIGN_OR_RETURN(next_len, ReadFull(in, next));
    }
    const bool last = next_len == 0;
    if (index > UINT32_MAX) return Damaged(index, "is past the last possible segment");
    const auto nonce = SegmentNonce(header, static_cast<uint32_t>(index), last);
    const size_t plain_len = current_len - kAesGcmTagSize;
    if (!key->Decrypt(nonce, std::span<const uint8_t>(current.data(), current_len), aad,
                      plain.mutable_span().first(plain_len))
             .ok()) {
      return Damaged(index, last ? "does not verify as the last segment (tampered, reordered "
                                   "or the file was cut short)"
                                 : "does not verify (tampered, reordered, or bytes follow the "
                                   "last segment)");
    }
    KMS_RETURN_IF_ERROR(out.Write(plain.span().first(plain_len)));
    done += plain_len;
    if (progress) progress(done);
    if (last) return absl::OkStatus();
    std::swap(current, next);
    current_len = next_len;
  }
}

}  // namespace kms::crypto
