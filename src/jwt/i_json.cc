#include "src/jwt/i_json.h"

#include <charconv>
#include <cmath>
#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace kms::jwt {
namespace {

using Json = nlohmann::json;

// A decimal number reduced to its significant digits (no leading or trailing zeros)
// and the exponent e of 0.d1d2d3... x 10^e. Zero has no digits.
struct Decimal {
  std::string digits;
  int64_t exponent = 0;
  bool operator==(const Decimal&) const = default;
};

// `text` is a JSON number (the lexer checked its grammar) or to_chars output.
Decimal Normalize(std::string_view text) {
  Decimal out;
  size_t i = 0;
  if (i < text.size() && (text[i] == '-' || text[i] == '+')) ++i;
  int64_t point = -1;  // digits before the decimal point, counted from the first digit
  std::string all;
  for (; i < text.size() && text[i] != 'e' && text[i] != 'E'; ++i) {
    if (text[i] == '.') {
      point = static_cast<int64_t>(all.size());
    } else {
      all.push_back(text[i]);
    }
  }
  if (point < 0) point = static_cast<int64_t>(all.size());
  int64_t exp10 = 0;
  if (i < text.size()) {  // exponent: clamp absurd lengths, they are refused anyway
    ++i;
    bool negative = false;
    if (i < text.size() && (text[i] == '-' || text[i] == '+')) negative = text[i++] == '-';
    for (; i < text.size(); ++i) {
      if (exp10 < 1'000'000'000) exp10 = exp10 * 10 + (text[i] - '0');
    }
    if (negative) exp10 = -exp10;
  }
  size_t first = all.find_first_not_of('0');
  if (first == std::string::npos) return out;  // zero
  size_t last = all.find_last_not_of('0');
  out.digits = all.substr(first, last - first + 1);
  out.exponent = point - static_cast<int64_t>(first) + exp10;
  return out;
}

bool IsFaithfulDouble(double value, std::string_view text) {
  if (!std::isfinite(value)) return false;
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), value, std::chars_format::scientific);
  if (ec != std::errc()) return false;
  return Normalize(text) == Normalize(std::string_view(buf, end - buf));
}

// UTF-8 is already valid (the lexer checks it); looks for noncharacters.
bool HasNoncharacter(const std::string& s) {
  for (size_t i = 0; i < s.size();) {
    const auto b = static_cast<uint8_t>(s[i]);
    uint32_t cp = 0;
    size_t n = 1;
    if (b < 0x80) {
      cp = b;
    } else if ((b & 0xE0) == 0xC0 && i + 1 < s.size()) {
      cp = (b & 0x1F) << 6 | (s[i + 1] & 0x3F);
      n = 2;
    } else if ((b & 0xF0) == 0xE0 && i + 2 < s.size()) {
      cp = (b & 0x0F) << 12 | (s[i + 1] & 0x3F) << 6 | (s[i + 2] & 0x3F);
      n = 3;
    } else if (i + 3 < s.size()) {
      cp = (b & 0x07) << 18 | (s[i + 1] & 0x3F) << 12 | (s[i + 2] & 0x3F) << 6 |
           (s[i + 3] & 0x3F);
      n = 4;
    }
    if ((cp >= 0xFDD0 && cp <= 0xFDEF) || (cp & 0xFFFE) == 0xFFFE) return true;
    i += n;
  }
  return false;
}

class IJsonChecker : public nlohmann::json_sax<Json> {
 public:
  explicit IJsonChecker(int max_depth) : max_depth_(max_depth) {}

  absl::Status status() const { return status_; }

  bool null() override { return true; }
  bool boolean(bool) override { return true; }
  bool number_integer(number_integer_t v) override {
    if (v > kMaxSafeInteger || v < -kMaxSafeInteger) {
      return Fail("claims hold an integer beyond 2^53 that JSON readers cannot represent "
                  "exactly (RFC 7493 §2.2); send it as a string");
    }
    return true;
  }
  bool number_unsigned(number_unsigned_t v) override {
    if (v > static_cast<uint64_t>(kMaxSafeInteger)) {
      return Fail("claims hold an integer beyond 2^53 that JSON readers cannot represent "
                  "exactly (RFC 7493 §2.2); send it as a string");
    }
    return true;
  }
  bool number_float(number_float_t v, const string_t& text) override {
    if (text.find_first_of(".eE") == std::string::npos) {
      // An integer too large for 64 bits: the lexer fell back to a double.
      return Fail("claims hold an integer beyond 2^53 that JSON readers cannot represent "
                  "exactly (RFC 7493 §2.2); send it as a string");
    }
    if (!IsFaithfulDouble(v, text)) {
      return Fail("claims hold a number that a double cannot represent faithfully "
                  "(RFC 7493 §2.2)");
    }
    return true;
  }
  bool string(string_t& s) override { return CheckString(s); }
  bool binary(binary_t&) override { return Fail("claims are not JSON"); }
  bool start_object(std::size_t) override {
    keys_.emplace_back();
    return Enter();
  }
  bool key(string_t& k) override {
    if (!CheckString(k)) return false;
    if (!keys_.back().insert(k).second) {
      return Fail("claims hold a duplicate member name (RFC 7493 §2.3)");
    }
    return true;
  }
  bool end_object() override {
    keys_.pop_back();
    --depth_;
    return true;
  }
  bool start_array(std::size_t) override { return Enter(); }
  bool end_array() override {
    --depth_;
    return true;
  }
  bool parse_error(std::size_t, const std::string&,
                   const nlohmann::detail::exception&) override {
    // Invalid JSON, invalid UTF-8, a lone surrogate, a number out of double range.
    return Fail("claims are not valid JSON (or not valid UTF-8)");
  }

 private:
  bool Enter() {
    if (++depth_ > max_depth_) {
      return Fail(absl::StrCat("claims nest deeper than ", max_depth_, " levels"));
    }
    return true;
  }
  bool CheckString(const std::string& s) {
    if (HasNoncharacter(s)) {
      return Fail("claims hold a Unicode noncharacter (RFC 7493 §2.1)");
    }
    return true;
  }
  bool Fail(std::string message) {
    if (status_.ok()) status_ = absl::InvalidArgumentError(message);
    return false;
  }

  const int max_depth_;
  int depth_ = 0;
  std::vector<std::set<std::string>> keys_;
  absl::Status status_;
};

}  // namespace

absl::Status CheckIJson(std::string_view text, int max_depth) {
  IJsonChecker checker(max_depth);
  bool ok = false;
  try {
    ok = Json::sax_parse(text.begin(), text.end(), &checker, Json::input_format_t::json,
                         /*strict=*/true, /*ignore_comments=*/false);
  } catch (const std::exception&) {  // sax_parse reports through parse_error; defensive
    ok = false;
  }
  if (!checker.status().ok()) return checker.status();
  if (!ok) return absl::InvalidArgumentError("claims are not valid JSON");
  return absl::OkStatus();
}

}  // namespace kms::jwt
