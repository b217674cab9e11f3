#include "src/server/xks/sigv4.h"

#include <algorithm>
#include <ctime>
#include <optional>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "src/crypto/mac.h"

namespace kms::server::xks {
namespace {

constexpr std::string_view kAlgorithm = "AWS4-HMAC-SHA256";
constexpr std::string_view kTerminator = "aws4_request";

absl::Status Unauthenticated(std::string_view why) {
  return absl::UnauthenticatedError(absl::StrCat("request signature: ", absl::string_view(why.data(), why.size())));
}

bool Unreserved(unsigned char c) {
  return absl::ascii_isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~';
}

void PercentEncode(std::string_view in, bool keep_slash, std::string* out) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  for (char ch : in) {
    unsigned char c = static_cast<unsigned char>(ch);
    if (Unreserved(c) || (keep_slash && c == '/')) {
      out->push_back(ch);
    } else {
      out->push_back('%');
      out->push_back(kHex[c >> 4]);
      out->push_back(kHex[c & 0xf]);
    }
  }
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string PercentDecode(std::string_view in) {
  std::string out;
  out.reserve(in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    if (in[i] == '%' && i + 2 < in.size()) {
      int hi = HexValue(in[i + 1]);
      int lo = HexValue(in[i + 2]);
      if (hi >= 0 && lo >= 0) {
        out.push_back(static_cast<char>(hi * 16 + lo));
        i += 2;
        continue;
      }
    }
    out.push_back(in[i]);
  }
  return out;
}

std::string CanonicalQuery(std::string_view query) {
  if (query.empty()) return "";
  std::vector<std::pair<std::string, std::string>> params;
  for (absl::string_view part : absl::StrSplit(absl::string_view(query.data(), query.size()), '&')) {
    if (part.empty()) continue;
    size_t eq = part.find('=');
    std::string key, value;
    PercentEncode(PercentDecode(std::string_view(part.data(), std::min(eq, part.size()))), false, &key);
    if (eq != absl::string_view::npos) {
      PercentEncode(PercentDecode(std::string_view(part.data() + eq + 1, part.size() - eq - 1)), false, &value);
    }
    params.emplace_back(std::move(key), std::move(value));
  }
  std::sort(params.begin(), params.end());
  std::string out;
  for (const auto& [k, v] : params) {
    if (!out.empty()) out.push_back('&');
    absl::StrAppend(&out, k, "=", v);
  }
  return out;
}

// Trims and collapses runs of spaces (and tabs) to one space.
std::string NormalizeValue(std::string_view v) {
  std::string out;
  bool space = false;
  for (char c : v) {
    if (c == ' ' || c == '\t') {
      space = true;
      continue;
    }
    if (space && !out.empty()) out.push_back(' ');
    space = false;
    out.push_back(c);
  }
  return out;
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

bool AllDigits(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

int Num(std::string_view s) {
  int v = 0;
  for (char c : s) v = v * 10 + (c - '0');
  return v;
}

std::span<const uint8_t> Bytes(std::string_view s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

}  // namespace

absl::StatusOr<SigV4Authorization> ParseAuthorization(std::string_view value) {
  const auto bad = [](std::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat("Authorization header: ", absl::string_view(why.data(), why.size())));
  };
  value = Trim(value);
  if (!value.starts_with(kAlgorithm) || value.size() == kAlgorithm.size() ||
      (value[kAlgorithm.size()] != ' ')) {
    return bad("not AWS4-HMAC-SHA256");
  }
  value.remove_prefix(kAlgorithm.size());
  SigV4Authorization out;
  bool have_credential = false, have_headers = false, have_signature = false;
  for (absl::string_view raw : absl::StrSplit(absl::string_view(value.data(), value.size()), ',')) {
    std::string_view part = Trim(std::string_view(raw.data(), raw.size()));
    size_t eq = part.find('=');
    if (eq == std::string_view::npos) return bad("a part is not NAME=VALUE");
    std::string_view name = part.substr(0, eq);
    std::string_view v = part.substr(eq + 1);
    if (name == "Credential" && !have_credential) {
      std::vector<std::string> scope = absl::StrSplit(absl::string_view(v.data(), v.size()), '/');
      if (scope.size() != 5 || scope[4] != kTerminator || scope[0].empty()) {
        return bad("Credential is not AKID/DATE/REGION/SERVICE/aws4_request");
      }
      out.access_key_id = scope[0];
      out.date = scope[1];
      out.region = scope[2];
      out.service = scope[3];
      have_credential = true;
    } else if (name == "SignedHeaders" && !have_headers) {
      out.signed_headers = absl::StrSplit(absl::string_view(v.data(), v.size()), ';');
      for (const std::string& h : out.signed_headers) {
        if (h.empty() || h != absl::AsciiStrToLower(h)) return bad("SignedHeaders is malformed");
      }
      have_headers = true;
    } else if (name == "Signature" && !have_signature) {
      if (v.size() != 64 || !std::all_of(v.begin(), v.end(), [](char c) {
            return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
          })) {
        return bad("Signature is not 64 lower-case hex digits");
      }
      out.signature = std::string(v);
      have_signature = true;
    } else {
      return bad("unknown or repeated part");
    }
  }
  if (!have_credential || !have_headers || !have_signature) {
    return bad("Credential, SignedHeaders and Signature are required");
  }
  return out;
}

absl::StatusOr<std::string> CanonicalRequest(const SignedRequest& request,
                                             std::span<const std::string> signed_headers) {
  std::string out;
  absl::StrAppend(&out, absl::string_view(request.method.data(), request.method.size()), "\n");
  std::string path;
  PercentEncode(request.path.empty() ? std::string_view("/") : request.path, true, &path);
  absl::StrAppend(&out, path, "\n", CanonicalQuery(request.query), "\n");
  for (const std::string& name : signed_headers) {
    std::vector<std::string> values;
    for (const auto& [k, v] : request.headers) {
      if (absl::EqualsIgnoreCase(k, name)) values.push_back(NormalizeValue(v));
    }
    if (values.empty()) {
      return absl::NotFoundError(absl::StrCat("signed header '", name, "' is not in the request"));
    }
    absl::StrAppend(&out, name, ":", absl::StrJoin(values, ","), "\n");
  }
  absl::StrAppend(&out, "\n", absl::StrJoin(signed_headers, ";"), "\n",
                  crypto::LowerHex(crypto::Sha256(request.body)));
  return out;
}

std::string StringToSign(std::string_view amz_date, std::string_view scope,
                         std::string_view canonical_request) {
  return absl::StrCat(absl::string_view(kAlgorithm.data(), kAlgorithm.size()), "\n", absl::string_view(amz_date.data(), amz_date.size()), "\n",
                      absl::string_view(scope.data(), scope.size()), "\n",
                      crypto::LowerHex(crypto::Sha256(canonical_request)));
}

std::string Signature(const SecretBytes& secret, std::string_view date, std::string_view region,
                      std::string_view service, std::string_view string_to_sign) {
  SecretBytes seed(4 + secret.size());
  std::copy_n(reinterpret_cast<const uint8_t*>("AWS4"), 4, seed.mutable_span().begin());
  std::copy(secret.span().begin(), secret.span().end(), seed.mutable_span().begin() + 4);
  crypto::Sha256Digest k = crypto::HmacSha256(seed.span(), date);
  k = crypto::HmacSha256(k, region);
  k = crypto::HmacSha256(k, service);
  k = crypto::HmacSha256(k, kTerminator);
  const crypto::Sha256Digest sig = crypto::HmacSha256(k, string_to_sign);
  std::fill(k.begin(), k.end(), 0);
  return crypto::LowerHex(sig);
}

absl::StatusOr<int64_t> ParseAmzDate(std::string_view d) {
  if (d.size() != 16 || d[8] != 'T' || d[15] != 'Z' || !AllDigits(d.substr(0, 8)) ||
      !AllDigits(d.substr(9, 6))) {
    return absl::InvalidArgumentError("X-Amz-Date is not YYYYMMDDTHHMMSSZ");
  }
  std::tm tm{};
  tm.tm_year = Num(d.substr(0, 4)) - 1900;
  tm.tm_mon = Num(d.substr(4, 2)) - 1;
  tm.tm_mday = Num(d.substr(6, 2));
  tm.tm_hour = Num(d.substr(9, 2));
  tm.tm_min = Num(d.substr(11, 2));
  tm.tm_sec = Num(d.substr(13, 2));
  if (tm.tm_mon < 0 || tm.tm_mon > 11 || tm.tm_mday < 1 || tm.tm_mday > 31 || tm.tm_hour > 23 ||
      tm.tm_min > 59 || tm.tm_sec > 60) {
    return absl::InvalidArgumentError("X-Amz-Date is not a valid time");
  }
  return static_cast<int64_t>(timegm(&tm));
}

absl::StatusOr<SigV4Verifier> SigV4Verifier::Create(Options options,
                                                    std::vector<SigV4Credential> credentials) {
  if (options.region.empty() || options.service.empty()) {
    return absl::InvalidArgumentError("SigV4: region and service are required");
  }
  if (credentials.empty()) return absl::InvalidArgumentError("SigV4: no credentials");
  for (size_t i = 0; i < credentials.size(); ++i) {
    if (credentials[i].access_key_id.empty() || credentials[i].secret_access_key.size() == 0) {
      return absl::InvalidArgumentError("SigV4: an access key id or secret is empty");
    }
    for (size_t j = 0; j < i; ++j) {
      if (credentials[j].access_key_id == credentials[i].access_key_id) {
        return absl::InvalidArgumentError("SigV4: an access key id is listed twice");
      }
    }
  }
  return SigV4Verifier(std::move(options), std::move(credentials));
}

absl::StatusOr<std::string> SigV4Verifier::Verify(const SignedRequest& request,
                                                  int64_t now_unix) const {
  std::optional<std::string_view> header;
  std::optional<std::string_view> amz_date;
  for (const auto& [k, v] : request.headers) {
    if (!header && absl::EqualsIgnoreCase(k, "authorization")) header = v;
    if (!amz_date && absl::EqualsIgnoreCase(k, "x-amz-date")) amz_date = v;
  }
  if (!header) return Unauthenticated("no Authorization header");
  absl::StatusOr<SigV4Authorization> auth = ParseAuthorization(*header);
  if (!auth.ok()) return Unauthenticated(std::string(auth.status().message()));
  const SigV4Credential* credential = nullptr;
  for (const SigV4Credential& c : credentials_) {
    if (c.access_key_id == auth->access_key_id) credential = &c;
  }
  if (credential == nullptr) return Unauthenticated("unknown access key id");
  if (auth->region != options_.region) return Unauthenticated("signed for another region");
  if (auth->service != options_.service) return Unauthenticated("signed for another service");
  const auto& sh = auth->signed_headers;
  if (std::find(sh.begin(), sh.end(), "host") == sh.end() ||
      std::find(sh.begin(), sh.end(), "x-amz-date") == sh.end()) {
    return Unauthenticated("host and x-amz-date must be signed");
  }
  if (!amz_date) return Unauthenticated("no X-Amz-Date header");
  absl::StatusOr<int64_t> when = ParseAmzDate(*amz_date);
  if (!when.ok()) return Unauthenticated(std::string(when.status().message()));
  if (amz_date->substr(0, 8) != auth->date) {
    return Unauthenticated("the credential scope's date is not the request's");
  }
  if (*when < now_unix - options_.max_skew_seconds || *when > now_unix + options_.max_skew_seconds) {
    return Unauthenticated("the request time is outside the allowed clock skew");
  }
  absl::StatusOr<std::string> canonical = CanonicalRequest(request, sh);
  if (!canonical.ok()) return Unauthenticated(std::string(canonical.status().message()));
  const std::string scope =
      absl::StrCat(auth->date, "/", auth->region, "/", auth->service, "/",
                   absl::string_view(kTerminator.data(), kTerminator.size()));
  const std::string expected =
      Signature(credential->secret_access_key, auth->date, auth->region, auth->service,
                StringToSign(*amz_date, scope, *canonical));
  if (!crypto::ConstantTimeEquals(Bytes(expected), Bytes(auth->signature))) {
    return Unauthenticated("signature does not match");
  }
  return credential->access_key_id;
}

}  // namespace kms::server::xks
