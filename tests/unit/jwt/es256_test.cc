#include "src/jwt/es256.h"

#include <array>
#include <cstring>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "src/common/base64.h"

namespace kms::jwt {
namespace {

using ::absl::StatusCode;

// RFC 7515 Appendix A.3: the example P-256 key (public part) and its ES256 JWS.
constexpr char kA3X[] = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU";
constexpr char kA3Y[] = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0";
constexpr char kA3SigningInput[] =
    "eyJhbGciOiJFUzI1NiJ9."
    "eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ";
constexpr char kA3Signature[] =
    "DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q";
// The RFC 7638 thumbprint of that key, computed independently (Python hashlib).
constexpr char kA3Thumbprint[] = "oKIywvGUpTVTyxMQ3bwIIeQUudfr_CkLMjCE19ECD-U";

std::string A3Jwk() {
  return std::string(R"({"kty":"EC","crv":"P-256","x":")") + kA3X + R"(","y":")" + kA3Y +
         R"("})";
}

std::span<const uint8_t> Bytes(std::string_view s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

std::vector<uint8_t> Decode(std::string_view b64url) {
  auto d = Base64UrlDecode(b64url);
  EXPECT_TRUE(d.ok()) << d.status();
  return d.ok() ? *d : std::vector<uint8_t>();
}

std::unique_ptr<Es256PrivateKey> NewKey() {
  auto key = Es256PrivateKey::Generate();
  EXPECT_TRUE(key.ok()) << key.status();
  return key.ok() ? std::move(*key) : nullptr;
}

TEST(Es256Test, Rfc7515AppendixA3SignatureVerifies) {
  auto key = Es256PublicKey::FromJwk(A3Jwk());
  ASSERT_TRUE(key.ok()) << key.status();
  const std::vector<uint8_t> sig = Decode(kA3Signature);
  ASSERT_EQ(sig.size(), kEs256SignatureSize);
  EXPECT_TRUE((*key)->Verify(Bytes(kA3SigningInput), sig).ok());
}

TEST(Es256Test, Rfc7515AppendixA3WithAnyBitFlippedFails) {
  auto key = Es256PublicKey::FromJwk(A3Jwk());
  ASSERT_TRUE(key.ok()) << key.status();
  const std::vector<uint8_t> good = Decode(kA3Signature);
  for (size_t i = 0; i < good.size(); i += 7) {
    std::vector<uint8_t> bad = good;
    bad[i] ^= 0x01;
    EXPECT_EQ((*key)->Verify(Bytes(kA3SigningInput), bad).code(), StatusCode::kUnauthenticated)
        << "byte " << i;
  }
  std::string input = kA3SigningInput;
  input.back() ^= 0x01;
  EXPECT_EQ((*key)->Verify(Bytes(input), good).code(), StatusCode::kUnauthenticated);
}

TEST(Es256Test, ThumbprintInputHasTheRfc7638MemberOrder) {
  // RFC 7638 §3.2/§3.3: required members only (crv, kty, x, y for EC), sorted, no spaces.
  EXPECT_EQ(Es256ThumbprintInput("XX", "YY"), R"({"crv":"P-256","kty":"EC","x":"XX","y":"YY"})");
}

TEST(Es256Test, KidIsTheRfc7638ThumbprintOfTheA3Key) {
  EXPECT_EQ(Es256Thumbprint(kA3X, kA3Y), kA3Thumbprint);
  auto key = Es256PublicKey::FromJwk(A3Jwk());
  ASSERT_TRUE(key.ok()) << key.status();
  EXPECT_EQ((*key)->kid(), kA3Thumbprint);
  EXPECT_EQ((*key)->kid().size(), 43u);
}

TEST(Es256Test, JwkHasTheDocumentedMembersAndRoundTrips) {
  auto key = Es256PublicKey::FromJwk(A3Jwk());
  ASSERT_TRUE(key.ok()) << key.status();
  EXPECT_EQ((*key)->JwkJson(), std::string(R"({"kty":"EC","crv":"P-256","x":")") + kA3X +
                                   R"(","y":")" + kA3Y +
                                   R"(","use":"sig","alg":"ES256","kid":")" + kA3Thumbprint +
                                   R"("})");
  auto again = Es256PublicKey::FromJwk((*key)->JwkJson());
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ((*again)->kid(), (*key)->kid());
}

TEST(Es256Test, GeneratedKeySignsSixtyFourByteSignaturesThatVerify) {
  auto key = NewKey();
  ASSERT_NE(key, nullptr);
  for (int i = 0; i < 50; ++i) {  // r or s with leading zero bytes must still be 32 bytes
    const std::string msg = "message " + std::to_string(i);
    auto sig = key->Sign(Bytes(msg));
    ASSERT_TRUE(sig.ok()) << sig.status();
    EXPECT_EQ(sig->size(), 64u);
    EXPECT_TRUE(key->public_key().Verify(Bytes(msg), *sig).ok());
    EXPECT_FALSE(key->public_key().Verify(Bytes(msg + "!"), *sig).ok());
  }
}

TEST(Es256Test, SignaturesAreRandomized) {
  auto key = NewKey();
  ASSERT_NE(key, nullptr);
  auto a = key->Sign(Bytes("same"));
  auto b = key->Sign(Bytes("same"));
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_NE(*a, *b);
}

TEST(Es256Test, AnotherKeysSignatureFails) {
  auto a = NewKey();
  auto b = NewKey();
  ASSERT_TRUE(a && b);
  EXPECT_NE(a->kid(), b->kid());
  auto sig = a->Sign(Bytes("m"));
  ASSERT_TRUE(sig.ok());
  EXPECT_EQ(b->public_key().Verify(Bytes("m"), *sig).code(), StatusCode::kUnauthenticated);
}

TEST(Es256Test, DegenerateSignaturesAreRejected) {
  auto key = NewKey();
  ASSERT_NE(key, nullptr);
  std::vector<uint8_t> zeros(64, 0);
  EXPECT_EQ(key->public_key().Verify(Bytes("m"), zeros).code(), StatusCode::kUnauthenticated);
  std::vector<uint8_t> ones(64, 0xff);  // r, s >= group order
  EXPECT_EQ(key->public_key().Verify(Bytes("m"), ones).code(), StatusCode::kUnauthenticated);
  EXPECT_EQ(key->public_key().Verify(Bytes("m"), std::vector<uint8_t>(63, 1)).code(),
            StatusCode::kInvalidArgument);
  // The DER form OpenSSL emits is not a JWS signature.
  EXPECT_EQ(key->public_key().Verify(Bytes("m"), std::vector<uint8_t>(72, 1)).code(),
            StatusCode::kInvalidArgument);
}

TEST(Es256Test, Pkcs8RoundTripKeepsTheKey) {
  auto key = NewKey();
  ASSERT_NE(key, nullptr);
  auto der = key->ToPkcs8Der();
  ASSERT_TRUE(der.ok()) << der.status();
  EXPECT_GT(der->size(), 64u);
  auto back = Es256PrivateKey::FromPkcs8Der(der->span());
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ((*back)->kid(), key->kid());
  auto sig = (*back)->Sign(Bytes("m"));
  ASSERT_TRUE(sig.ok());
  EXPECT_TRUE(key->public_key().Verify(Bytes("m"), *sig).ok());
}

TEST(Es256Test, Pkcs8ImportRejectsGarbageTruncationAndOtherCurves) {
  auto key = NewKey();
  ASSERT_NE(key, nullptr);
  auto der = key->ToPkcs8Der();
  ASSERT_TRUE(der.ok());
  EXPECT_EQ(Es256PrivateKey::FromPkcs8Der(der->span().first(der->size() - 1)).status().code(),
            StatusCode::kInvalidArgument);
  std::vector<uint8_t> trailing(der->data(), der->data() + der->size());
  trailing.push_back(0);
  EXPECT_EQ(Es256PrivateKey::FromPkcs8Der(trailing).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(Es256PrivateKey::FromPkcs8Der(std::vector<uint8_t>(100, 0x30)).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(Es256PrivateKey::FromPkcs8Der({}).status().code(), StatusCode::kInvalidArgument);

  EVP_PKEY* p384 = EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-384");
  ASSERT_NE(p384, nullptr);
  unsigned char* out = nullptr;
  PKCS8_PRIV_KEY_INFO* p8 = EVP_PKEY2PKCS8(p384);
  const int len = i2d_PKCS8_PRIV_KEY_INFO(p8, &out);
  ASSERT_GT(len, 0);
  EXPECT_EQ(Es256PrivateKey::FromPkcs8Der(std::span<const uint8_t>(out, len)).status().code(),
            StatusCode::kInvalidArgument);
  OPENSSL_clear_free(out, len);
  PKCS8_PRIV_KEY_INFO_free(p8);
  EVP_PKEY_free(p384);
}

TEST(Es256Test, JwkImportRejectsWhatIsNotAP256PublicKey) {
  auto bad = [](const std::string& jwk) { return Es256PublicKey::FromJwk(jwk).status().code(); };
  const std::string xy = std::string(R"("x":")") + kA3X + R"(","y":")" + kA3Y + R"(")";
  EXPECT_EQ(bad("not json"), StatusCode::kInvalidArgument);
  EXPECT_EQ(bad("[]"), StatusCode::kInvalidArgument);
  EXPECT_EQ(bad(R"({"kty":"RSA","crv":"P-256",)" + xy + "}"), StatusCode::kInvalidArgument);
  EXPECT_EQ(bad(R"({"kty":"EC","crv":"P-384",)" + xy + "}"), StatusCode::kInvalidArgument);
  EXPECT_EQ(bad(R"({"kty":"EC","crv":"P-256","alg":"HS256",)" + xy + "}"),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(bad(R"({"kty":"EC","crv":"P-256","use":"enc",)" + xy + "}"),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(bad(R"({"kty":"EC","crv":"P-256","d":"jpsQnnGQmL-YBIffH1136cspYG6-0iY7X1fCE9-E9LI",)" +
                xy + "}"),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(bad(R"({"kty":"EC","crv":"P-256","kid":"other",)" + xy + "}"),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(bad(R"({"kty":"EC","crv":"P-256","x":"AA","y":"AA"})"), StatusCode::kInvalidArgument);
  EXPECT_EQ(bad(R"({"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU=","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"})"),
            StatusCode::kInvalidArgument);
  // y changed: no longer a point on the curve.
  EXPECT_EQ(bad(R"({"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a1"})"),
            StatusCode::kInvalidArgument);
}

TEST(Es256Test, ConcurrentSigningOnOneKeyIsSafe) {
  auto key = NewKey();
  ASSERT_NE(key, nullptr);
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 200; ++i) {
        const std::string msg = std::to_string(t) + ":" + std::to_string(i);
        auto sig = key->Sign(Bytes(msg));
        if (!sig.ok() || !key->public_key().Verify(Bytes(msg), *sig).ok()) ++failures;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
}

}  // namespace

namespace {
TEST(Es256LowSTest, SignaturesAreAlwaysInLowSForm) {
  // n/2 for P-256, big-endian.
  const std::array<uint8_t, 32> half = {
      0x7f, 0xff, 0xff, 0xff, 0x80, 0x00, 0x00, 0x00, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
      0xde, 0x73, 0x7d, 0x56, 0xd3, 0x8b, 0xcf, 0x42, 0x79, 0xdc, 0xe5, 0x61, 0x7e, 0x31, 0x92, 0xa8};
  auto key = Es256PrivateKey::Generate().value();
  const std::string msg = "header.payload";
  std::span<const uint8_t> bytes(reinterpret_cast<const uint8_t*>(msg.data()), msg.size());
  for (int i = 0; i < 200; ++i) {  // about half of raw ECDSA signatures are high-s
    auto sig = key->Sign(bytes).value();
    EXPECT_LE(std::memcmp(sig.data() + 32, half.data(), 32), 0) << "signature " << i;
    EXPECT_TRUE(key->public_key().Verify(bytes, sig).ok());
  }
}
}  // namespace

}  // namespace kms::jwt
