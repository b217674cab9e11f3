#include "src/common/base64.h"

#include <openssl/crypto.h>

namespace kms {
namespace {

enum class Alphabet { kStandard, kUrl };

// All-ones when lo <= c <= hi, else zero, without a branch (c, lo, hi in 0..255).
// C++20 defines >> on negative values as an arithmetic shift.
constexpr int InRange(int c, int lo, int hi) { return ((lo - 1 - c) & (c - (hi + 1))) >> 8; }

// 6-bit value -> character, computed rather than looked up so the memory access
// pattern does not depend on the (possibly secret) data.
char EncodeSextet(int v, Alphabet alphabet) {
  int c = v + 'A';
  c += InRange(v, 26, 63) & ('a' - 26 - 'A');
  c -= InRange(v, 52, 63) & ('a' - 26 - ('0' - 52));
  if (alphabet == Alphabet::kStandard) {
    c += InRange(v, 62, 62) & ('+' - ('0' + 10));
    c += InRange(v, 63, 63) & ('/' - ('0' + 11));
  } else {
    c += InRange(v, 62, 62) & ('-' - ('0' + 10));
    c += InRange(v, 63, 63) & ('_' - ('0' + 11));
  }
  return static_cast<char>(c);
}

// Character -> 6-bit value, or -1 when it is not in the alphabet.
int DecodeSextet(unsigned char uc, Alphabet alphabet) {
  const int c = uc;
  int v = -1;
  v += InRange(c, 'A', 'Z') & (c - 'A' + 1);
  v += InRange(c, 'a', 'z') & (c - 'a' + 26 + 1);
  v += InRange(c, '0', '9') & (c - '0' + 52 + 1);
  const char c62 = alphabet == Alphabet::kStandard ? '+' : '-';
  const char c63 = alphabet == Alphabet::kStandard ? '/' : '_';
  v += InRange(c, c62, c62) & (62 + 1);
  v += InRange(c, c63, c63) & (63 + 1);
  return v;
}

std::string Encode(std::span<const uint8_t> in, Alphabet alphabet, bool pad) {
  const size_t full = in.size() / 3;
  const size_t rest = in.size() % 3;
  std::string out;
  out.reserve(4 * full + (rest == 0 ? 0 : (pad ? 4 : rest + 1)));
  size_t i = 0;
  for (; i < 3 * full; i += 3) {
    const uint32_t w = (uint32_t{in[i]} << 16) | (uint32_t{in[i + 1]} << 8) | in[i + 2];
    out.push_back(EncodeSextet((w >> 18) & 0x3f, alphabet));
    out.push_back(EncodeSextet((w >> 12) & 0x3f, alphabet));
    out.push_back(EncodeSextet((w >> 6) & 0x3f, alphabet));
    out.push_back(EncodeSextet(w & 0x3f, alphabet));
  }
  if (rest != 0) {
    uint32_t w = uint32_t{in[i]} << 16;
    if (rest == 2) w |= uint32_t{in[i + 1]} << 8;
    out.push_back(EncodeSextet((w >> 18) & 0x3f, alphabet));
    out.push_back(EncodeSextet((w >> 12) & 0x3f, alphabet));
    if (rest == 2) out.push_back(EncodeSextet((w >> 6) & 0x3f, alphabet));
    if (pad) out.append(3 - rest, '=');
  }
  return out;
}

absl::StatusOr<std::vector<uint8_t>> Decode(std::string_view text, Alphabet alphabet,
                                            bool allow_padding) {
  size_t n = text.size();
  if (allow_padding && n % 4 == 0 && n > 0) {
    // Padding is accepted only as a complete final quantum: "xx==" or "xxx=". A third
    // '=' stays in the data and is rejected there as a non-alphabet character.
    size_t pad = 0;
    while (pad < 2 && n > 0 && text[n - 1] == '=') {
      --n;
      ++pad;
    }
    if (pad > 0 && n % 4 != 4 - pad) {
      return absl::InvalidArgumentError("invalid base64: misplaced padding");
    }
  }
  if (n % 4 == 1) return absl::InvalidArgumentError("invalid base64: bad length");

  const size_t full = n / 4;
  const size_t rest = n % 4;  // 0, 2 or 3 characters in the final quantum.
  std::vector<uint8_t> out;
  out.reserve(3 * full + (rest == 0 ? 0 : rest - 1));
  // Errors are accumulated rather than returned at the first bad character, so the
  // time taken does not reveal where the input goes wrong.
  int bad = 0;
  size_t i = 0;
  for (; i < 4 * full; i += 4) {
    const int a = DecodeSextet(text[i], alphabet);
    const int b = DecodeSextet(text[i + 1], alphabet);
    const int c = DecodeSextet(text[i + 2], alphabet);
    const int d = DecodeSextet(text[i + 3], alphabet);
    bad |= a | b | c | d;
    const uint32_t w = (uint32_t(a & 0x3f) << 18) | (uint32_t(b & 0x3f) << 12) |
                       (uint32_t(c & 0x3f) << 6) | uint32_t(d & 0x3f);
    out.push_back(static_cast<uint8_t>(w >> 16));
    out.push_back(static_cast<uint8_t>(w >> 8));
    out.push_back(static_cast<uint8_t>(w));
  }
  if (rest != 0) {
    const int a = DecodeSextet(text[i], alphabet);
    const int b = DecodeSextet(text[i + 1], alphabet);
    const int c = rest == 3 ? DecodeSextet(text[i + 2], alphabet) : 0;
    bad |= a | b | c;
    const uint32_t w =
        (uint32_t(a & 0x3f) << 18) | (uint32_t(b & 0x3f) << 12) | (uint32_t(c & 0x3f) << 6);
    // The bits below the last whole byte must be zero, or two encodings would decode
    // to the same bytes.
    const uint32_t unused = rest == 2 ? (w & 0xffff) : (w & 0xff);
    bad |= -static_cast<int>(unused != 0);
    out.push_back(static_cast<uint8_t>(w >> 16));
    if (rest == 3) out.push_back(static_cast<uint8_t>(w >> 8));
  }
  if (bad < 0) {
    // The partial output may be secret: wipe it before it is freed.
    OPENSSL_cleanse(out.data(), out.size());
    return absl::InvalidArgumentError("invalid base64: bad character or trailing bits");
  }
  return out;
}

}  // namespace

std::string Base64Encode(std::span<const uint8_t> bytes) {
  return Encode(bytes, Alphabet::kStandard, /*pad=*/true);
}

absl::StatusOr<std::vector<uint8_t>> Base64Decode(std::string_view text) {
  return Decode(text, Alphabet::kStandard, /*allow_padding=*/true);
}

std::string Base64UrlEncode(std::span<const uint8_t> bytes) {
  return Encode(bytes, Alphabet::kUrl, /*pad=*/false);
}

absl::StatusOr<std::vector<uint8_t>> Base64UrlDecode(std::string_view text) {
  return Decode(text, Alphabet::kUrl, /*allow_padding=*/false);
}

}  // namespace kms
