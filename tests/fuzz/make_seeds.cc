// Writes the seeds that need the real code to make (sealed fields, signed tokens,
// wrapped DEKs) and the binary-prefixed claims seeds into tests/fuzz/corpus/.
// Run once by hand; its output is checked in (a fresh run makes new nonces and
// signatures, so it rewrites those files with different but equivalent bytes):
//
//   cmake --build BUILD --target fuzz_make_seeds && BUILD/tests/fuzz/fuzz_make_seeds
//   tests/fuzz/corpus [TARGET]   (TARGET: only that target's seeds)
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include "src/common/base64.h"
#include "src/crypto/aes_gcm.h"
#include "src/crypto/field_cipher.h"
#include "src/crypto/file_stream.h"
#include "src/jwt/jwt.h"
#include "src/keys/wrapped_dek.h"
#include "tests/fakes/fake_kek_ring.h"
#include "tests/fuzz/fuzz_util.h"
#include "tests/fuzz/jwt_fuzz_common.h"

namespace kms::fuzz {
namespace {

std::filesystem::path root;

void Write(const std::string& target, const std::string& name, std::string_view bytes) {
  std::filesystem::create_directories(root / target);
  std::ofstream out(root / target / name, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  FUZZ_CHECK(out.good());
}

std::string Str(std::span<const uint8_t> b) { return std::string(AsText(b)); }

// --- field: the layout of field_fuzz.cc. ---
std::string FieldPrefix(std::string_view tenant, const std::vector<crypto::ContextPair>& context) {
  std::string s;
  s.push_back(static_cast<char>(tenant.size()));
  s += tenant;
  s.push_back(static_cast<char>(context.size()));
  for (const auto& [k, v] : context) {
    s.push_back(static_cast<char>(k.size()));
    s += k;
    s.push_back(static_cast<char>(v.size()));
    s += v;
  }
  return s;
}

std::string Sealed(std::string_view tenant, const std::vector<crypto::ContextPair>& context,
                   uint32_t dek_version, std::string_view plaintext) {
  auto key = crypto::AesGcmKey::Create(SecretBytes::CopyOf(std::span(kFieldKeyBytes)));
  FUZZ_CHECK(key.ok());
  auto aad = crypto::FieldAad(tenant, dek_version, context);
  FUZZ_CHECK(aad.ok());
  std::string out;
  FUZZ_CHECK(crypto::SealField(**key, dek_version, *aad, AsBytes(plaintext), &out).ok());
  return out;
}

void FieldSeeds() {
  const std::vector<crypto::ContextPair> ctx = {{"table", "users"}, {"column", "ssn"}};
  const std::string ct = Sealed("acme", ctx, 1, "123-45-6789");
  Write("field", "valid_acme_context", FieldPrefix("acme", ctx) + ct);
  Write("field", "valid_no_context_empty_plaintext",
        FieldPrefix("acme", {}) + Sealed("acme", {}, 7, ""));
  Write(
      "field", "valid_max_dek_version",
      FieldPrefix("t", {{"k", ""}}) + Sealed("t", {{"k", ""}}, 0xffffffffu, std::string(100, 'x')));
  Write("field", "other_tenant", FieldPrefix("acmf", ctx) + ct);
  Write("field", "context_reordered",
        FieldPrefix("acme", {{"column", "ssn"}, {"table", "users"}}) + ct);
  std::string tampered = ct;
  tampered.back() ^= 0x01;
  Write("field", "tag_flipped", FieldPrefix("acme", ctx) + tampered);
  std::string v2 = ct;
  v2[0] = 0x02;
  Write("field", "unknown_version", FieldPrefix("acme", ctx) + v2);
  std::string v0 = ct;
  v0[1] = v0[2] = v0[3] = v0[4] = 0;
  Write("field", "dek_version_zero", FieldPrefix("acme", ctx) + v0);
  Write("field", "too_short", FieldPrefix("acme", ctx) + ct.substr(0, 32));
  Write("field", "duplicate_context_key", FieldPrefix("acme", {{"a", "1"}, {"a", "2"}}) + ct);
}

// --- jwt_token: tokens signed with the fixed key, claims around kFuzzNow. ---
std::string B64(std::string_view s) { return Base64UrlEncode(AsBytes(s)); }

std::string Signed(std::string_view header_json, std::string_view payload_json) {
  std::string input = B64(header_json) + "." + B64(payload_json);
  auto sig = FuzzEs256Key().Sign(AsBytes(input));
  FUZZ_CHECK(sig.ok());
  return input + "." + Base64UrlEncode(*sig);
}

void JwtTokenSeeds() {
  const std::string header = jwt::HeaderJson(FuzzEs256Key().kid());
  const std::string now = std::to_string(kFuzzNow);
  const std::string later = std::to_string(kFuzzNow + 600);
  const std::string earlier = std::to_string(kFuzzNow - 600);
  auto encoded =
      jwt::EncodeCompact(FuzzEs256Key(), R"({"exp":)" + later + R"(,"iat":)" + now +
                                             R"(,"iss":"https://kmsd.example","sub":"alice"})");
  FUZZ_CHECK(encoded.ok());
  Write("jwt_token", "valid", *encoded);
  Write("jwt_token", "valid_nbf_no_kid",
        Signed(R"({"alg":"ES256"})", R"({"exp":)" + later + R"(,"nbf":)" + earlier + "}"));
  Write("jwt_token", "expired", Signed(header, R"({"exp":)" + earlier + "}"));
  Write("jwt_token", "not_yet_valid",
        Signed(header, R"({"exp":)" + later + R"(,"nbf":)" + later + "}"));
  Write("jwt_token", "issued_in_future",
        Signed(header, R"({"exp":)" + later + R"(,"iat":)" + later + "}"));
  Write("jwt_token", "no_exp", Signed(header, R"({"sub":"alice"})"));
  Write("jwt_token", "exp_float", Signed(header, R"({"exp":1.7000006e9})"));
  Write("jwt_token", "exp_string", Signed(header, R"({"exp":")" + later + R"("})"));
  Write("jwt_token", "payload_array", Signed(header, "[1,2]"));
  Write("jwt_token", "alg_none",
        B64(R"({"alg":"none","typ":"JWT"})") + "." + B64(R"({"exp":)" + later + "}") + ".");
  Write("jwt_token", "alg_hs256",
        Signed(R"({"alg":"HS256","typ":"JWT"})", R"({"exp":)" + later + "}"));
  Write("jwt_token", "crit_header",
        Signed(R"({"alg":"ES256","crit":["b64"],"b64":false})", R"({"exp":)" + later + "}"));
  Write("jwt_token", "kid_number", Signed(R"({"alg":"ES256","kid":7})", R"({"exp":1})"));
  std::string truncated = *encoded;
  truncated.pop_back();
  Write("jwt_token", "signature_truncated", truncated);
  Write("jwt_token", "two_parts", encoded->substr(0, encoded->rfind('.')));
  Write("jwt_token", "padded_base64", *encoded + "=");
}

// --- jwt_claims: ttl byte, issuer byte, claims JSON (jwt_claims_fuzz.cc). ---
void Claims(const std::string& name, uint8_t ttl, uint8_t issuer, std::string_view json) {
  std::string s;
  s.push_back(static_cast<char>(ttl));
  s.push_back(static_cast<char>(issuer));
  s += json;
  Write("jwt_claims", name, s);
}

void JwtClaimsSeeds() {
  Claims("valid_default_ttl", 0, 0, R"({"sub":"alice","aud":["a","b"],"scope":"read"})");
  Claims("valid_issuer_configured", 100, 1, R"({"sub":"alice"})");
  Claims("valid_same_issuer", 10, 1, R"({"iss":"https://kmsd.example","sub":"bob"})");
  Claims("valid_nbf_future", 200, 0, R"({"nbf":1700000500,"x":{"y":[1,2,{"z":null}]}})");
  Claims("nbf_after_exp", 1, 0, R"({"nbf":1800000000})");
  Claims("nbf_string", 1, 0, R"({"nbf":"soon"})");
  Claims("iat_given", 0, 0, R"({"iat":1})");
  Claims("exp_given", 0, 0, R"({"exp":1})");
  Claims("other_issuer", 0, 1, R"({"iss":"https://evil.example"})");
  Claims("iss_number", 0, 0, R"({"iss":1})");
  Claims("ttl_too_long", 250, 0, R"({})");
  Claims("ttl_negative", 255, 0, R"({})");
  Claims("not_object", 0, 0, R"(["sub"])");
  Claims("too_deep", 0, 0, std::string(40, '[') + std::string(40, ']'));
  Claims("invalid_utf8", 0, 0, "{\"sub\":\"\xff\xfe\"}");
  Claims("unicode", 0, 0, R"({"name":"J\u00f6rg \ud83d\ude00","n":1e308,"m":-0.0})");
}

// --- wrapped_dek: blobs made by WrapDek with KEK 1 = kFieldKeyBytes (the fake HSM). ---
void WrappedDekSeeds() {
  testing::FakeKekRing hsm;
  auto kek_blob = testing::FakeHsm::WrapKnownKek(kFieldKeyBytes);
  FUZZ_CHECK(kek_blob.ok());
  FUZZ_CHECK(hsm.hsm().LoadKek(1, *kek_blob).ok());
  FUZZ_CHECK(hsm.hsm().LoadKek(2, *kek_blob).ok());
  SecretBytes dek(keys::kDekSize);
  for (size_t i = 0; i < dek.size(); ++i) dek.data()[i] = static_cast<uint8_t>(0xa0 + i);
  auto blob = keys::WrapDek(hsm, 1, "acme", 1, dek);
  FUZZ_CHECK(blob.ok());
  Write("wrapped_dek", "valid_acme_v1", Str(*blob));
  auto other = keys::WrapDek(hsm, 2, "acme", 1, dek);  // KEK 2 is not loaded by the target
  FUZZ_CHECK(other.ok());
  Write("wrapped_dek", "kek_version_not_loaded", Str(*other));
  auto other_dek_version = keys::WrapDek(hsm, 1, "acme", 2, dek);
  FUZZ_CHECK(other_dek_version.ok());
  Write("wrapped_dek", "other_dek_version", Str(*other_dek_version));
  std::vector<uint8_t> b = *blob;
  b[0] = 0x02;
  Write("wrapped_dek", "unknown_version", Str(b));
  b = *blob;
  b.back() ^= 0x80;
  Write("wrapped_dek", "tag_flipped", Str(b));
  Write("wrapped_dek", "truncated", Str(std::span(*blob).first(64)));
  b = *blob;
  b.push_back(0);
  Write("wrapped_dek", "trailing_byte", Str(b));
  Write("wrapped_dek", "empty", "");
}

// --- encrypted_file: files in format v1 under the fixed key (kFieldKeyBytes). ---
std::string EncryptedFile(uint32_t segment_size, std::string_view plaintext) {
  crypto::FileHeader header;
  header.segment_size = segment_size;
  header.key_kind = crypto::FileKeyKind::kNamedKey;
  header.key_name = "backups";
  header.context = {{"host", "db-1"}, {"purpose", "backup"}};
  header.wrapped_key = "a wrapped data key (opaque to the parser)";
  header.nonce_prefix = {1, 2, 3, 4, 5, 6, 7};
  crypto::StringSource in{std::string(plaintext)};
  crypto::StringSink out;
  FUZZ_CHECK(crypto::EncryptFileStream(header, SecretBytes::CopyOf(std::span(kFieldKeyBytes)), in, out)
                 .ok());
  return out.data();
}

void EncryptedFileSeeds() {
  const std::string two_segments(5000, 'p');
  const std::string file = EncryptedFile(crypto::kMinSegmentSize, two_segments);
  Write("encrypted_file", "valid_two_segments", file);
  Write("encrypted_file", "valid_empty", EncryptedFile(crypto::kMinSegmentSize, ""));
  Write("encrypted_file", "valid_one_segment", EncryptedFile(crypto::kDefaultSegmentSize, "hello"));
  Write("encrypted_file", "truncated_last_segment", file.substr(0, file.size() - 20));
  Write("encrypted_file", "extra_bytes", file + "x");
  std::string flipped = file;
  flipped[flipped.size() - 1] ^= 1;
  Write("encrypted_file", "tag_flipped", flipped);
  Write("encrypted_file", "header_only_truncated", file.substr(0, 40));
  Write("encrypted_file", "wrong_magic", "KMSDFILX" + file.substr(8, 200));
}

}  // namespace
}  // namespace kms::fuzz

int main(int argc, char** argv) {
  if (argc != 2 && argc != 3) {
    std::fprintf(stderr, "usage: %s CORPUS_DIR [TARGET]\n", argv[0]);
    return 2;
  }
  kms::fuzz::root = argv[1];
  const std::string only = argc == 3 ? argv[2] : "";
  kms::SetSecretMemoryLocking(false);
  const std::pair<const char*, void (*)()> seeds[] = {
      {"field", kms::fuzz::FieldSeeds},
      {"jwt_token", kms::fuzz::JwtTokenSeeds},
      {"jwt_claims", kms::fuzz::JwtClaimsSeeds},
      {"wrapped_dek", kms::fuzz::WrappedDekSeeds},
      {"encrypted_file", kms::fuzz::EncryptedFileSeeds},
  };
  for (const auto& [target, write] : seeds) {
    if (only.empty() || only == target) write();
  }
  return 0;
}
