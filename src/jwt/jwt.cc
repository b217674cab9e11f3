#include "src/jwt/jwt.h"

#include <charconv>
#include <cmath>
#include <limits>
#include <optional>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "src/common/base64.h"
#include "src/jwt/i_json.h"

namespace kms::jwt {
namespace {

using Json = nlohmann::json;

std::span<const uint8_t> Bytes(std::string_view s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

// Parses JSON text without exceptions; nullopt when it is not valid JSON or nests
// deeper than kMaxClaimsDepth.
std::optional<Json> ParseJson(std::string_view text) {
  bool too_deep = false;
  Json::parser_callback_t depth_guard = [&too_deep](int depth, Json::parse_event_t,
                                                    Json&) {
    if (depth > kMaxClaimsDepth) too_deep = true;
    return !too_deep;
  };
  Json value = Json::parse(text.begin(), text.end(), depth_guard, /*allow_exceptions=*/false);
  if (too_deep || value.is_discarded()) return std::nullopt;
  return value;
}

std::optional<std::string> Dump(const Json& value) {
  try {
    return value.dump();
  } catch (const Json::exception&) {  // invalid UTF-8; the parser rejects it already
    return std::nullopt;
  }
}

// A finite double as the shortest decimal that reads back as it, laid out as
// ECMAScript's Number::toString does (fixed for 1e-6 <= |v| < 1e21, else exponent), and
// always with a fraction or exponent so that every reader keeps it a float ("1.0").
std::string FormatDouble(double v) {
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), v, std::chars_format::scientific);
  if (ec != std::errc()) return "0.0";  // not reached: CheckIJson refuses non-finite numbers
  const std::string_view sci(buf, end - buf);  // [-]d[.ddd]e(+|-)XX
  std::string out;
  size_t i = 0;
  if (sci[0] == '-') {
    out += '-';
    i = 1;
  }
  const size_t e_pos = sci.find('e');
  std::string digits;
  for (size_t j = i; j < e_pos; ++j) {
    if (sci[j] != '.') digits += sci[j];
  }
  int exp10 = 0;
  std::from_chars(sci.data() + e_pos + (sci[e_pos + 1] == '+' ? 2 : 1), sci.data() + sci.size(),
                  exp10);
  const int k = static_cast<int>(digits.size());
  const int n = exp10 + 1;  // v = 0.digits x 10^n
  if (k <= n && n <= 21) {
    out += digits;
    out.append(n - k, '0');
    out += ".0";
  } else if (0 < n && n <= 21) {
    out += digits.substr(0, n);
    out += '.';
    out += digits.substr(n);
  } else if (-6 < n && n <= 0) {
    out += "0.";
    out.append(-n, '0');
    out += digits;
  } else {
    out += digits[0];
    if (k > 1) {
      out += '.';
      out += digits.substr(1);
    }
    out += absl::StrCat("e", n - 1 >= 0 ? "+" : "-", std::abs(n - 1));
  }
  return out;
}

// The signed payload's text: members sorted by name (nlohmann's object order), no
// whitespace, strings escaped by nlohmann, and every float in its shortest round-trip
// form (FormatDouble), so a faithful number is written with the digits it was given.
// (nlohmann's own dump prints some doubles with more digits than they were given:
// 10.00000000001 as 10.000000000009999; the same double, another text.) Throws
// nlohmann::json::type_error on invalid UTF-8 (checked before).
void AppendClaimsJson(const Json& value, std::string& out) {
  switch (value.type()) {
    case Json::value_t::object: {
      out += '{';
      bool first = true;
      for (const auto& [k, v] : value.items()) {
        if (!first) out += ',';
        first = false;
        out += Json(k).dump();
        out += ':';
        AppendClaimsJson(v, out);
      }
      out += '}';
      return;
    }
    case Json::value_t::array: {
      out += '[';
      bool first = true;
      for (const Json& v : value) {
        if (!first) out += ',';
        first = false;
        AppendClaimsJson(v, out);
      }
      out += ']';
      return;
    }
    case Json::value_t::number_float:
      out += FormatDouble(value.get<double>());
      return;
    default:
      out += value.dump();
  }
}

std::optional<std::string> SerializeClaims(const Json& value) {
  try {
    std::string out;
    AppendClaimsJson(value, out);
    return out;
  } catch (const Json::exception&) {
    return std::nullopt;
  }
}

// A JSON number as whole seconds (NumericDate, RFC 7519 §2; fractions rounded down).
std::optional<int64_t> NumericDate(const Json& value) {
  if (value.is_number_integer() && !value.is_number_unsigned()) return value.get<int64_t>();
  if (value.is_number_unsigned()) {
    const uint64_t u = value.get<uint64_t>();
    if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return std::nullopt;
    return static_cast<int64_t>(u);
  }
  if (value.is_number_float()) {
    const double d = value.get<double>();
    if (!std::isfinite(d) || d < -9.2e18 || d > 9.2e18) return std::nullopt;
    return static_cast<int64_t>(std::floor(d));
  }
  return std::nullopt;
}

absl::Status Rejected(absl::string_view reason) {
  return absl::UnauthenticatedError(absl::StrCat("token rejected: ", reason));
}

}  // namespace

absl::StatusOr<BuiltClaims> BuildClaims(std::string_view claims_json, int64_t ttl_seconds,
                                        int64_t now, const ClaimsPolicy& policy) {
  if (ttl_seconds < 0) return absl::InvalidArgumentError("ttl must not be negative");
  if (ttl_seconds == 0) {
    ttl_seconds =
        policy.default_ttl_seconds > 0 ? policy.default_ttl_seconds : policy.max_ttl_seconds;
  }
  if (ttl_seconds > policy.max_ttl_seconds) {
    return absl::InvalidArgumentError(
        absl::StrCat("ttl exceeds the maximum of ", policy.max_ttl_seconds, " seconds"));
  }
  if (claims_json.size() > policy.max_claims_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("claims exceed ", policy.max_claims_bytes, " bytes"));
  }
  // Faithful or refused: what kmsd checks below is what every verifier will read.
  KMS_RETURN_IF_ERROR(CheckIJson(claims_json, kMaxClaimsDepth));
  std::optional<Json> claims = ParseJson(claims_json);
  if (!claims.has_value() || !claims->is_object()) {
    return absl::InvalidArgumentError("claims must be a JSON object");
  }
  for (const char* reserved : {"iat", "exp"}) {
    if (claims->contains(reserved)) {
      return absl::InvalidArgumentError(
          absl::StrCat("claim \"", reserved, "\" is set by kmsd and must not be given"));
    }
  }
  BuiltClaims out;
  out.issued_at = now;
  out.expires_at = now + ttl_seconds;
  if (auto it = claims->find("nbf"); it != claims->end()) {
    std::optional<int64_t> nbf = NumericDate(*it);
    if (!nbf.has_value()) return absl::InvalidArgumentError("claim \"nbf\" must be a number");
    if (*nbf > out.expires_at) {
      return absl::InvalidArgumentError("claim \"nbf\" is after the token's expiry");
    }
  }
  if (auto it = claims->find("iss"); it != claims->end()) {
    if (!it->is_string()) return absl::InvalidArgumentError("claim \"iss\" must be a string");
    if (!policy.issuer.empty() && it->get_ref<const std::string&>() != policy.issuer) {
      return absl::InvalidArgumentError("claim \"iss\" differs from the configured issuer");
    }
  } else if (!policy.issuer.empty()) {
    (*claims)["iss"] = policy.issuer;
  }
  (*claims)["iat"] = out.issued_at;
  (*claims)["exp"] = out.expires_at;
  std::optional<std::string> text = SerializeClaims(*claims);
  if (!text.has_value()) return absl::InvalidArgumentError("claims are not valid UTF-8");
  // The limit holds on what is signed, iat/exp/iss included.
  if (text->size() > policy.max_claims_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "claims with iat, exp and iss exceed ", policy.max_claims_bytes, " bytes"));
  }
  // What is signed reads back as exactly the claims given plus kmsd's own (I-JSON, no
  // member or number rewritten): a property of the serializer, checked by the jwt_claims
  // fuzz target and the unit tests rather than on every call (it cost a second parse, a
  // copy and a comparison of the whole document per token).
  out.payload_json = std::move(*text);
  return out;
}

std::string HeaderJson(std::string_view kid, std::string_view typ) {
  // kid is base64url (es256.h), so it needs no escaping; escape anyway for any caller.
  Json k = std::string(kid);
  Json t = std::string(typ);
  std::optional<std::string> kid_json = Dump(k);
  std::optional<std::string> typ_json = Dump(t);
  return absl::StrCat(R"({"alg":"ES256","typ":)", typ_json.value_or(R"("JWT")"), R"(,"kid":)",
                      kid_json.value_or(R"("")"), "}");
}

namespace {

// Appends base64url without padding (RFC 7515 §2) of `in` to `out`, in place: no
// intermediate string per part.
void AppendBase64Url(std::span<const uint8_t> in, std::string* out) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  const size_t start = out->size();
  out->resize(start + (in.size() * 4 + 2) / 3);
  char* p = out->data() + start;
  size_t i = 0;
  for (; i + 3 <= in.size(); i += 3) {
    const uint32_t v = (uint32_t{in[i]} << 16) | (uint32_t{in[i + 1]} << 8) | in[i + 2];
    *p++ = kAlphabet[(v >> 18) & 63];
    *p++ = kAlphabet[(v >> 12) & 63];
    *p++ = kAlphabet[(v >> 6) & 63];
    *p++ = kAlphabet[v & 63];
  }
  if (i + 1 == in.size()) {
    const uint32_t v = uint32_t{in[i]} << 16;
    *p++ = kAlphabet[(v >> 18) & 63];
    *p++ = kAlphabet[(v >> 12) & 63];
  } else if (i + 2 == in.size()) {
    const uint32_t v = (uint32_t{in[i]} << 16) | (uint32_t{in[i + 1]} << 8);
    *p++ = kAlphabet[(v >> 18) & 63];
    *p++ = kAlphabet[(v >> 12) & 63];
    *p++ = kAlphabet[(v >> 6) & 63];
  }
}

// base64url(HeaderJson(kid, typ)): the same for every token of a key, so each thread
// keeps the last one it built instead of building JSON and Base64 per token.
const std::string& EncodedHeader(std::string_view kid, std::string_view typ) {
  struct Memo {
    std::string kid, typ, encoded;
    bool set = false;
  };
  thread_local Memo memo;
  if (!memo.set || memo.kid != kid || memo.typ != typ) {
    memo.kid.assign(kid);
    memo.typ.assign(typ);
    memo.encoded.clear();
    AppendBase64Url(Bytes(HeaderJson(kid, typ)), &memo.encoded);
    memo.set = true;
  }
  return memo.encoded;
}

}  // namespace

absl::StatusOr<std::string> EncodeCompact(const Es256PrivateKey& key,
                                          std::string_view payload_json, std::string_view typ) {
  // One buffer, sized once: header.payload, signed in place, then .signature appended.
  const std::string& header = EncodedHeader(key.kid(), typ);
  std::string token;
  token.reserve(header.size() + 1 + (payload_json.size() * 4 + 2) / 3 + 1 +
                (kEs256SignatureSize * 4 + 2) / 3);
  token.append(header);
  token.push_back('.');
  AppendBase64Url(Bytes(payload_json), &token);
  KMS_ASSIGN_OR_RETURN(Es256Signature sig, key.Sign(Bytes(token)));
  token.push_back('.');
  AppendBase64Url(sig, &token);
  return token;
}

absl::StatusOr<ParsedJwt> ParseCompact(std::string_view token) {
  auto malformed = [](absl::string_view what) {
    return absl::InvalidArgumentError(absl::StrCat("malformed token: ", what));
  };
  if (token.size() > kMaxTokenBytes) return malformed("too long");
  const size_t dot1 = token.find('.');
  if (dot1 == std::string_view::npos) return malformed("not three parts");
  const size_t dot2 = token.find('.', dot1 + 1);
  if (dot2 == std::string_view::npos || token.find('.', dot2 + 1) != std::string_view::npos) {
    return malformed("not three parts");
  }
  const std::string_view header_b64 = token.substr(0, dot1);
  const std::string_view payload_b64 = token.substr(dot1 + 1, dot2 - dot1 - 1);
  const std::string_view sig_b64 = token.substr(dot2 + 1);

  auto header = Base64UrlDecode(header_b64);
  auto payload = Base64UrlDecode(payload_b64);
  auto sig = Base64UrlDecode(sig_b64);
  if (!header.ok() || !payload.ok() || !sig.ok()) return malformed("bad base64url");
  if (sig->size() != kEs256SignatureSize) return malformed("signature is not 64 bytes");

  ParsedJwt out;
  out.header_json.assign(header->begin(), header->end());
  out.payload_json.assign(payload->begin(), payload->end());
  out.signing_input = std::string(token.substr(0, dot2));
  out.signature = std::move(*sig);

  // Header and payload must be I-JSON: a duplicate "exp" or an integer beyond 2^53 could
  // read differently here and at another verifier.
  if (!CheckIJson(out.header_json, kMaxClaimsDepth).ok()) {
    return malformed("header is not I-JSON (RFC 7493)");
  }
  if (!CheckIJson(out.payload_json, kMaxClaimsDepth).ok()) {
    return malformed("payload is not I-JSON (RFC 7493)");
  }
  std::optional<Json> h = ParseJson(out.header_json);
  if (!h.has_value() || !h->is_object()) return malformed("header is not a JSON object");
  auto alg = h->find("alg");
  if (alg == h->end() || !alg->is_string() || alg->get_ref<const std::string&>() != "ES256") {
    return absl::InvalidArgumentError("unsupported token: alg must be ES256");
  }
  // We understand no header extensions; "b64":false (RFC 7797) would change what is
  // signed.
  if (h->contains("crit") || h->contains("b64")) {
    return absl::InvalidArgumentError("unsupported token: header extensions");
  }
  // kid is optional in JWS; when present it must be a non-empty string. The lookup
  // decides whether a token without one can verify (JwtService's cannot).
  if (auto kid = h->find("kid"); kid != h->end()) {
    if (!kid->is_string() || kid->get_ref<const std::string&>().empty()) {
      return malformed("kid is not a non-empty string");
    }
    out.kid = kid->get<std::string>();
  }
  if (auto typ = h->find("typ"); typ != h->end()) {
    if (!typ->is_string()) return malformed("typ is not a string");
    out.typ = typ->get<std::string>();
  }
  std::optional<Json> p = ParseJson(out.payload_json);
  if (!p.has_value() || !p->is_object()) return malformed("payload is not a JSON object");
  return out;
}

absl::StatusOr<VerifiedJwt> VerifyCompact(std::string_view token, const KeyLookup& lookup,
                                          int64_t now, int64_t leeway_seconds,
                                          std::string_view typ) {
  auto parsed = ParseCompact(token);
  if (!parsed.ok()) return Rejected(parsed.status().message());
  if (typ == kAccessTokenType) {
    // Another kind of document signed by the same keys (a shred receipt) is not a token.
    if (!parsed->typ.empty() && !absl::EqualsIgnoreCase(parsed->typ, "JWT")) {
      return Rejected("typ is not JWT: not an access token");
    }
  } else if (parsed->typ != typ) {
    return Rejected("typ is not the expected document type");
  }
  const Es256PublicKey* key = lookup ? lookup(parsed->kid) : nullptr;
  if (key == nullptr) return Rejected("unknown kid");
  if (!key->Verify(Bytes(parsed->signing_input), parsed->signature).ok()) {
    return Rejected("bad signature");
  }
  // Parsed a second time only for signed tokens; ParseCompact checked it is an object.
  std::optional<Json> claims = ParseJson(parsed->payload_json);
  if (!claims.has_value() || !claims->is_object()) return Rejected("payload is not an object");
  auto exp_it = claims->find("exp");
  if (exp_it == claims->end()) return Rejected("no exp");
  std::optional<int64_t> exp = NumericDate(*exp_it);
  if (!exp.has_value()) return Rejected("exp is not a number");
  if (now - leeway_seconds >= *exp) return Rejected("expired");
  if (auto it = claims->find("nbf"); it != claims->end()) {
    std::optional<int64_t> nbf = NumericDate(*it);
    if (!nbf.has_value()) return Rejected("nbf is not a number");
    if (now + leeway_seconds < *nbf) return Rejected("not yet valid");
  }
  if (auto it = claims->find("iat"); it != claims->end()) {
    std::optional<int64_t> iat = NumericDate(*it);
    if (!iat.has_value()) return Rejected("iat is not a number");
    if (now + leeway_seconds < *iat) return Rejected("issued in the future");
  }
  VerifiedJwt out;
  out.kid = std::move(parsed->kid);
  out.claims_json = std::move(parsed->payload_json);
  out.expires_at = *exp;
  return out;
}

}  // namespace kms::jwt
