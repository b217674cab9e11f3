// Helpers shared by the fuzz targets: an invariant check that aborts (so libFuzzer
// records the input), a reader that splits the input into fields, and fixed keys.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <span>
#include <string_view>

namespace kms::fuzz {

// Aborts with a message: a property every input must satisfy did not hold.
#define FUZZ_CHECK(cond)                                                                 \
  do {                                                                                   \
    if (!(cond)) {                                                                       \
      std::fprintf(stderr, "%s:%d: FUZZ_CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                      \
    }                                                                                    \
  } while (0)

// Consumes the input front to back. A field is a length byte then that many bytes
// (fewer when the input runs out), so every byte string is a valid input.
class ByteReader {
 public:
  ByteReader(const uint8_t* data, size_t size) : data_(data), size_(size) {}

  uint8_t U8() {
    if (size_ == 0) return 0;
    uint8_t b = *data_;
    ++data_;
    --size_;
    return b;
  }
  // A field of at most `max_len` bytes; its length is the next byte mod (max_len + 1).
  std::string_view Field(size_t max_len) {
    size_t n = U8() % (max_len + 1);
    if (n > size_) n = size_;
    std::string_view s(reinterpret_cast<const char*>(data_), n);
    data_ += n;
    size_ -= n;
    return s;
  }
  std::span<const uint8_t> Rest() const { return {data_, size_}; }

 private:
  const uint8_t* data_;
  size_t size_;
};

inline std::string_view AsText(std::span<const uint8_t> bytes) {
  return {reinterpret_cast<const char*>(bytes.data()), bytes.size()};
}
inline std::span<const uint8_t> AsBytes(std::string_view text) {
  return {reinterpret_cast<const uint8_t*>(text.data()), text.size()};
}

// The fixed 32-byte field key of the fuzz targets and seeds: 00 01 02 ... 1f.
inline constexpr uint8_t kFieldKeyBytes[32] = {
    0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f,
    0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f};

// A fixed P-256 private key, PKCS#8 DER (made once with `openssl genpkey` and
// `openssl pkcs8 -topk8 -nocrypt`; a test key, it signs nothing real).
inline constexpr uint8_t kEs256Pkcs8[] = {
    0x30, 0x81, 0x87, 0x02, 0x01, 0x00, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02,
    0x01, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x04, 0x6d, 0x30, 0x6b, 0x02,
    0x01, 0x01, 0x04, 0x20, 0x2b, 0x70, 0xc5, 0x95, 0xa3, 0xa5, 0x30, 0xe4, 0xc8, 0x3a, 0x5e, 0xcd,
    0x8a, 0x36, 0x8f, 0x46, 0x5c, 0x5b, 0xd2, 0x18, 0xe0, 0x59, 0xa1, 0xb3, 0x61, 0xd6, 0x06, 0xe7,
    0x55, 0xa7, 0xcf, 0x71, 0xa1, 0x44, 0x03, 0x42, 0x00, 0x04, 0xf1, 0x2f, 0xcf, 0x6d, 0xa0, 0xb3,
    0xdd, 0xae, 0x21, 0x92, 0xab, 0x63, 0x93, 0x27, 0xa4, 0x06, 0x5e, 0x9f, 0xdc, 0xc6, 0x9e, 0xe7,
    0xa0, 0xcc, 0xe3, 0x44, 0x03, 0xf4, 0xfc, 0x77, 0xe1, 0xf6, 0x65, 0x05, 0xc2, 0x38, 0x89, 0xe9,
    0x78, 0x00, 0x29, 0xe6, 0x1c, 0x57, 0x46, 0x34, 0x18, 0xb7, 0xc9, 0xc5, 0x5b, 0x50, 0xd9, 0xa6,
    0x14, 0xf4, 0x9c, 0x59, 0x79, 0xa5, 0xb3, 0xec, 0x4b, 0x72};

// "Now" for the JWT targets, so that a seed verifies the same way on every run.
inline constexpr int64_t kFuzzNow = 1700000000;

}  // namespace kms::fuzz
