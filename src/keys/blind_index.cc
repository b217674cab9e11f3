#include "src/keys/blind_index.h"

#include <arpa/inet.h>

#include <cstring>
#include <vector>

#include "src/common/big_endian.h"
#include "src/crypto/mac.h"

namespace kms::keys {

namespace {

constexpr std::string_view kLabel = "kmsd:bidx:v1";

bool IsSpace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

std::string_view Trim(std::string_view v) {
  while (!v.empty() && IsSpace(v.front())) v.remove_prefix(1);
  while (!v.empty() && IsSpace(v.back())) v.remove_suffix(1);
  return v;
}

absl::Status NotA(std::string_view kind) {
  return absl::InvalidArgumentError(std::string("value is not a valid ") + std::string(kind));
}

absl::StatusOr<std::string> Email(std::string_view value) {
  std::string_view v = Trim(value);
  const size_t at = v.find('@');
  if (at == std::string_view::npos || at == 0 || at + 1 == v.size() ||
      v.find('@', at + 1) != std::string_view::npos) {
    return NotA("email address");
  }
  std::string out(v);
  for (char& c : out) {
    if (IsSpace(c)) return NotA("email address");
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

absl::StatusOr<std::string> Phone(std::string_view value) {
  std::string_view v = Trim(value);
  if (v.starts_with("+")) {
    v.remove_prefix(1);
  } else if (v.starts_with("00")) {
    v.remove_prefix(2);
  } else {
    return absl::InvalidArgumentError(
        "phone number must be in international form (+ or 00 and the country code)");
  }
  std::string digits = "+";
  for (char c : v) {
    if (c >= '0' && c <= '9') {
      digits.push_back(c);
    } else if (c != ' ' && c != '-' && c != '.' && c != '(' && c != ')') {
      return NotA("phone number");
    }
  }
  const size_t n = digits.size() - 1;
  if (n < 7 || n > 15 || digits[1] == '0') return NotA("phone number");
  return digits;
}

absl::StatusOr<std::string> Ip(std::string_view value) {
  const std::string v(Trim(value));
  char text[INET6_ADDRSTRLEN] = {};
  in_addr v4;
  if (inet_pton(AF_INET, v.c_str(), &v4) == 1) {
    if (inet_ntop(AF_INET, &v4, text, sizeof(text)) == nullptr) return NotA("IP address");
    return std::string(text);
  }
  in6_addr v6;
  if (inet_pton(AF_INET6, v.c_str(), &v6) == 1) {
    static const uint8_t kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (std::memcmp(v6.s6_addr, kMapped, sizeof(kMapped)) == 0) {
      std::memcpy(&v4, v6.s6_addr + 12, 4);
      if (inet_ntop(AF_INET, &v4, text, sizeof(text)) == nullptr) return NotA("IP address");
      return std::string(text);
    }
    if (inet_ntop(AF_INET6, &v6, text, sizeof(text)) == nullptr) return NotA("IP address");
    return std::string(text);
  }
  return NotA("IP address");
}

}  // namespace

absl::StatusOr<std::string> NormalizeForIndex(std::string_view normalization,
                                              std::string_view value) {
  if (value.empty()) return absl::InvalidArgumentError("value is empty");
  if (normalization == "email") return Email(value);
  if (normalization == "phone") return Phone(value);
  if (normalization == "ip") return Ip(value);
  if (normalization == "exact") return std::string(value);
  return absl::InvalidArgumentError(
      "unknown normalization (use \"email\", \"phone\", \"ip\" or \"exact\")");
}

absl::StatusOr<BlindIndex> ComputeBlindIndex(const SecretBytes& index_key,
                                             std::string_view normalization,
                                             std::string_view normalized) {
  std::vector<uint8_t> input;
  input.reserve(kLabel.size() + 4 + normalization.size() + normalized.size());
  AppendBytes(input, kLabel);
  AppendLengthPrefixed(input, normalization);
  AppendBytes(input, normalized);
  if (index_key.empty()) return absl::InvalidArgumentError("blind index key is empty");
  return crypto::HmacSha256(index_key.span(), input);
}

}  // namespace kms::keys
