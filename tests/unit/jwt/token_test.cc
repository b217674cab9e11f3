// Compact JWS encoding, the claims rules and token verification (src/jwt/jwt.h).
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "src/common/base64.h"
#include "src/jwt/jwt.h"

namespace kms::jwt {
namespace {

using ::absl::StatusCode;
using Json = nlohmann::json;

constexpr int64_t kNow = 1'700'000'000;

std::span<const uint8_t> Bytes(std::string_view s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}
std::string B64(std::string_view s) { return Base64UrlEncode(Bytes(s)); }
std::string Unb64(std::string_view s) {
  auto d = Base64UrlDecode(s);
  return d.ok() ? std::string(d->begin(), d->end()) : std::string("<bad>");
}
std::vector<std::string> Split(const std::string& token) {
  std::vector<std::string> parts;
  size_t start = 0;
  for (;;) {
    size_t dot = token.find('.', start);
    parts.push_back(token.substr(start, dot - start));
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  return parts;
}

ClaimsPolicy Policy(std::string issuer = "https://iam.example") {
  ClaimsPolicy p;
  p.issuer = std::move(issuer);
  p.max_ttl_seconds = 900;
  p.max_claims_bytes = 8192;
  return p;
}

absl::StatusCode BuildCode(std::string_view claims, int64_t ttl = 0,
                           const ClaimsPolicy& policy = Policy()) {
  return BuildClaims(claims, ttl, kNow, policy).status().code();
}

class TokenTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto key = Es256PrivateKey::Generate();
    ASSERT_TRUE(key.ok()) << key.status();
    key_ = std::move(*key);
  }
  KeyLookup Lookup() const {
    return [this](std::string_view kid) -> const Es256PublicKey* {
      return kid == key_->kid() ? &key_->public_key() : nullptr;
    };
  }
  std::string Token(const std::string& claims = R"({"sub":"u1"})", int64_t ttl = 600) {
    auto built = BuildClaims(claims, ttl, kNow, Policy());
    EXPECT_TRUE(built.ok()) << built.status();
    auto token = EncodeCompact(*key_, built->payload_json);
    EXPECT_TRUE(token.ok()) << token.status();
    return *token;
  }
  // Signs arbitrary header and payload JSON text with the test key.
  std::string SignRaw(const std::string& header, const std::string& payload) {
    std::string input = B64(header) + "." + B64(payload);
    auto sig = key_->Sign(Bytes(input));
    EXPECT_TRUE(sig.ok());
    return input + "." + Base64UrlEncode(*sig);
  }
  absl::StatusCode VerifyCode(const std::string& token, int64_t now = kNow) {
    return VerifyCompact(token, Lookup(), now, 60).status().code();
  }

  std::unique_ptr<Es256PrivateKey> key_;
};

// --- Claims rules

TEST(ClaimsTest, KmsdSetsIatExpAndIss) {
  auto built = BuildClaims(R"({"sub":"u1","scope":["a","b"]})", 600, kNow, Policy());
  ASSERT_TRUE(built.ok()) << built.status();
  EXPECT_EQ(built->issued_at, kNow);
  EXPECT_EQ(built->expires_at, kNow + 600);
  Json claims = Json::parse(built->payload_json);
  EXPECT_EQ(claims["iat"], kNow);
  EXPECT_EQ(claims["exp"], kNow + 600);
  EXPECT_EQ(claims["iss"], "https://iam.example");
  EXPECT_EQ(claims["sub"], "u1");
  EXPECT_EQ(claims["scope"], Json::array({"a", "b"}));
}

TEST(ClaimsTest, TtlZeroMeansTheDefaultWhichIsTheMaximum) {
  auto built = BuildClaims("{}", 0, kNow, Policy());
  ASSERT_TRUE(built.ok()) << built.status();
  EXPECT_EQ(built->expires_at, kNow + 900);
  ClaimsPolicy p = Policy();
  p.default_ttl_seconds = 300;
  built = BuildClaims("{}", 0, kNow, p);
  ASSERT_TRUE(built.ok());
  EXPECT_EQ(built->expires_at, kNow + 300);
}

TEST(ClaimsTest, TtlAboveTheMaximumOrNegativeIsInvalid) {
  EXPECT_EQ(BuildCode("{}", 900), StatusCode::kOk);
  EXPECT_EQ(BuildCode("{}", 901), StatusCode::kInvalidArgument);
  EXPECT_EQ(BuildCode("{}", -1), StatusCode::kInvalidArgument);
}

TEST(ClaimsTest, ClaimsMustBeAJsonObject) {
  for (const char* text : {"", " ", "[]", "[{}]", "1", "\"sub\"", "null", "true", "{",
                           R"({"a":1} {"b":2})", R"({"a":})", "{'a':1}"}) {
    EXPECT_EQ(BuildCode(text), StatusCode::kInvalidArgument) << text;
  }
  EXPECT_EQ(BuildCode(" { } "), StatusCode::kOk);
}

TEST(ClaimsTest, ClaimsAboveTheSizeLimitAreInvalidAndTheLimitIsConfigurable) {
  const std::string big = R"({"pad":")" + std::string(8192, 'x') + R"("})";
  EXPECT_EQ(BuildCode(big), StatusCode::kInvalidArgument);
  // The limit holds on what is signed: the claims plus iat, exp and iss.
  auto empty = BuildClaims(R"({"pad":""})", 0, kNow, Policy());
  ASSERT_TRUE(empty.ok());
  const size_t added = empty->payload_json.size() - std::string(R"({"pad":""})").size();
  const std::string exact = R"({"pad":")" + std::string(8192 - 10 - added, 'x') + R"("})";
  auto built = BuildClaims(exact, 0, kNow, Policy());
  ASSERT_TRUE(built.ok()) << built.status();
  EXPECT_EQ(built->payload_json.size(), 8192u);
  const std::string one_more = R"({"pad":")" + std::string(8192 - 9 - added, 'x') + R"("})";
  ASSERT_LE(one_more.size(), 8192u);
  EXPECT_EQ(BuildCode(one_more), StatusCode::kInvalidArgument);
  ClaimsPolicy small = Policy();
  small.max_claims_bytes = 16;
  EXPECT_EQ(BuildCode(R"({"sub":"a-long-subject"})", 0, small), StatusCode::kInvalidArgument);
}

TEST(ClaimsTest, CallerSetIatOrExpIsInvalidEvenWhenItMatches) {
  EXPECT_EQ(BuildCode(R"({"exp":1700000900})", 900), StatusCode::kInvalidArgument);
  EXPECT_EQ(BuildCode(R"({"iat":1700000000})"), StatusCode::kInvalidArgument);
  EXPECT_EQ(BuildCode(R"({"exp":null})"), StatusCode::kInvalidArgument);
}

TEST(ClaimsTest, NbfMustBeANumberNotAfterExp) {
  EXPECT_EQ(BuildCode(R"({"nbf":1700000000})", 600), StatusCode::kOk);
  EXPECT_EQ(BuildCode(R"({"nbf":1700000600})", 600), StatusCode::kOk);
  EXPECT_EQ(BuildCode(R"({"nbf":1700000601})", 600), StatusCode::kInvalidArgument);
  EXPECT_EQ(BuildCode(R"({"nbf":"1700000000"})", 600), StatusCode::kInvalidArgument);
}

TEST(ClaimsTest, IssMustMatchTheConfiguredIssuer) {
  EXPECT_EQ(BuildCode(R"({"iss":"https://iam.example"})"), StatusCode::kOk);
  EXPECT_EQ(BuildCode(R"({"iss":"https://evil.example"})"), StatusCode::kInvalidArgument);
  EXPECT_EQ(BuildCode(R"({"iss":42})"), StatusCode::kInvalidArgument);
  // No issuer configured: the caller's is kept, none is added.
  auto built = BuildClaims(R"({"iss":"anyone"})", 0, kNow, Policy(""));
  ASSERT_TRUE(built.ok());
  EXPECT_EQ(Json::parse(built->payload_json)["iss"], "anyone");
  built = BuildClaims("{}", 0, kNow, Policy(""));
  ASSERT_TRUE(built.ok());
  EXPECT_FALSE(Json::parse(built->payload_json).contains("iss"));
}

TEST(ClaimsTest, DeepNestingAndInvalidUtf8AreInvalid) {
  std::string deep = R"({"a":)" + std::string(40, '[') + std::string(40, ']') + "}";
  EXPECT_EQ(BuildCode(deep), StatusCode::kInvalidArgument);
  std::string ok = R"({"a":)" + std::string(20, '[') + std::string(20, ']') + "}";
  EXPECT_EQ(BuildCode(ok), StatusCode::kOk);
  EXPECT_EQ(BuildCode("{\"a\":\"\xff\xfe\"}"), StatusCode::kInvalidArgument);
}

// --- Faithful claims (I-JSON, RFC 7493): refused, never rewritten

TEST(ClaimsTest, AnIntegerBeyond2To53IsRefusedNotRounded) {
  auto built = BuildClaims(R"({"sub":"u1","uid":123456789012345678901234567890})", 0, kNow,
                           Policy());
  ASSERT_EQ(built.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(built.status().message().find("2^53"), std::string::npos) << built.status();
  EXPECT_EQ(built.status().message().find("12345"), std::string::npos) << built.status();
  EXPECT_EQ(BuildCode(R"({"n":9007199254740991})"), StatusCode::kOk);
  EXPECT_EQ(BuildCode(R"({"n":-9007199254740991})"), StatusCode::kOk);
  EXPECT_EQ(BuildCode(R"({"n":9007199254740992})"), StatusCode::kInvalidArgument);
  EXPECT_EQ(BuildCode(R"({"n":-9007199254740992})"), StatusCode::kInvalidArgument);
  EXPECT_EQ(BuildCode(R"({"n":18446744073709551615})"), StatusCode::kInvalidArgument);
  EXPECT_EQ(BuildCode(R"({"a":[{"n":99999999999999999999}]})"), StatusCode::kInvalidArgument);
  EXPECT_EQ(BuildCode(R"({"nbf":123456789012345678901234567890})"), StatusCode::kInvalidArgument);
}

TEST(ClaimsTest, NumbersADoubleDoesNotHoldFaithfullyAreRefused) {
  for (const char* ok : {R"({"x":1.5})", R"({"x":0.1})", R"({"x":-0.0})", R"({"x":1e300})",
                         R"({"x":1.2345678901234568e+29})", R"({"x":2.5E-3})",
                         R"({"x":5e-324})", R"({"x":100.000})"}) {
    EXPECT_EQ(BuildCode(ok), StatusCode::kOk) << ok;
  }
  for (const char* bad : {R"({"x":0.10000000000000000001})", R"({"x":1e-400})", R"({"x":1e400})",
                          R"({"x":-1E400})", R"({"x":123456789012345678901234567890.0})",
                          R"({"x":3.141592653589793238462643383279})"}) {
    EXPECT_EQ(BuildCode(bad), StatusCode::kInvalidArgument) << bad;
  }
}

TEST(ClaimsTest, DuplicateMembersAreRefusedAtAnyDepth) {
  EXPECT_EQ(BuildCode(R"({"sub":"a","sub":"b"})"), StatusCode::kInvalidArgument);
  EXPECT_EQ(BuildCode(R"({"nbf":1,"nbf":1})"), StatusCode::kInvalidArgument);
  EXPECT_EQ(BuildCode(R"({"o":{"k":1,"k":2}})"), StatusCode::kInvalidArgument);
  EXPECT_EQ(BuildCode(R"({"a":[{"k":1},{"k":2}]})"), StatusCode::kOk);  // different objects
  EXPECT_EQ(BuildCode(R"({"k":{"k":1}})"), StatusCode::kOk);
}

TEST(ClaimsTest, InvalidUtf8LoneSurrogatesAndNoncharactersAreRefused) {
  for (const std::string bad : {
           std::string("{\"s\":\"\xff\"}"),              // not UTF-8
           std::string("{\"s\":\"\xc0\xaf\"}"),         // overlong
           std::string("{\"s\":\"\xed\xa0\x80\"}"),    // a surrogate, UTF-8 encoded
           std::string(R"({"s":"\ud800"})"),                // lone high surrogate
           std::string(R"({"s":"\udc00x"})"),               // lone low surrogate
           std::string(R"({"s":"\ud800\u0041"})"),          // high surrogate, no low
           std::string(R"({"s":"\uffff"})"),                // noncharacters
           std::string(R"({"s":"\ufdd0"})"),
           std::string(R"({"s":"\ud83f\udffe"})"),          // U+1FFFE
           std::string("{\"s\":\"\xef\xbf\xbe\"}"),    // U+FFFE, raw
           std::string(R"({"\uffff":1})"),                  // in a member name
       }) {
    auto built = BuildClaims(bad, 0, kNow, Policy());
    EXPECT_EQ(built.status().code(), StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_EQ(BuildCode(R"({"s":"\ud83d\ude00 caf\u00e9 \u4e2d"})"), StatusCode::kOk);
  EXPECT_EQ(BuildCode("{\"s\":\"\xf0\x9f\x98\x80 caf\xc3\xa9\"}"), StatusCode::kOk);
}

TEST(ClaimsTest, TheSignedPayloadHoldsExactlyTheGivenClaimsPlusKmsdsOwn) {
  const std::string given = R"({"sub":"u1","uid":9007199254740991,"neg":-42,"f":0.1,"big":1e300,
      "s":"\ud83d\ude00\n\"q\"","b":true,"z":null,"arr":[1,[2,{"k":"v"}],[]],"o":{},
      "nbf":1700000000.5})";
  auto built = BuildClaims(given, 600, kNow, Policy());
  ASSERT_TRUE(built.ok()) << built.status();
  Json signed_claims = Json::parse(built->payload_json);
  EXPECT_EQ(signed_claims["iat"], kNow);
  EXPECT_EQ(signed_claims["exp"], kNow + 600);
  EXPECT_EQ(signed_claims["iss"], "https://iam.example");
  signed_claims.erase("iat");
  signed_claims.erase("exp");
  signed_claims.erase("iss");
  EXPECT_EQ(signed_claims, Json::parse(given));
  // Numbers are written as they were checked: no rounding to another value.
  EXPECT_NE(built->payload_json.find("\"uid\":9007199254740991"), std::string::npos);
  EXPECT_NE(built->payload_json.find("\"f\":0.1"), std::string::npos);
  // Found by the claims fuzzer: a float some serializers print with other digits.
  auto digits = BuildClaims(R"({"f":10.00000000001000000,"g":1.0,"h":-0.0,"i":1e300})", 0,
                            kNow, Policy());
  ASSERT_TRUE(digits.ok()) << digits.status();
  EXPECT_NE(digits->payload_json.find("\"f\":10.00000000001,"), std::string::npos)
      << digits->payload_json;
  EXPECT_NE(digits->payload_json.find("\"g\":1.0,"), std::string::npos) << digits->payload_json;
  EXPECT_NE(digits->payload_json.find("\"h\":-0.0,"), std::string::npos) << digits->payload_json;
  EXPECT_NE(digits->payload_json.find("\"i\":1e+300"), std::string::npos) << digits->payload_json;
  // Found by the claims fuzzer: a float written with an exponent that is a whole number.
  auto whole = BuildClaims(R"({"n":90071992547419e4,"small":0.000001,"tiny":1e-7,"big":1e21})",
                           0, kNow, Policy());
  ASSERT_TRUE(whole.ok()) << whole.status();
  EXPECT_EQ(Json::parse(whole->payload_json)["n"], Json::parse("90071992547419e4"));
  EXPECT_NE(whole->payload_json.find("\"n\":900719925474190000.0"), std::string::npos)
      << whole->payload_json;
  EXPECT_NE(whole->payload_json.find("\"small\":0.000001,"), std::string::npos);
  EXPECT_NE(whole->payload_json.find("\"tiny\":1e-7"), std::string::npos);
  EXPECT_NE(whole->payload_json.find("\"big\":1e+21"), std::string::npos);
}

TEST_F(TokenTest, EveryTokenKmsdIssuesPassesItsOwnVerificationUpToTheLargestLimit) {
  ClaimsPolicy p = Policy();
  p.max_claims_bytes = kMaxClaimsBytesLimit;
  auto empty = BuildClaims(R"({"pad":""})", 0, kNow, p);
  ASSERT_TRUE(empty.ok());
  const size_t added = empty->payload_json.size() - 10;
  // A payload of exactly the largest limit, signed and verified.
  const std::string claims =
      R"({"pad":")" + std::string(kMaxClaimsBytesLimit - 10 - added, '~') + R"("})";
  auto built = BuildClaims(claims, 0, kNow, p);
  ASSERT_TRUE(built.ok()) << built.status();
  auto token = EncodeCompact(*key_, built->payload_json);
  ASSERT_TRUE(token.ok());
  EXPECT_LE(token->size(), kMaxTokenBytes);
  auto verified = VerifyCompact(*token, Lookup(), kNow, 60);
  ASSERT_TRUE(verified.ok()) << verified.status();
  EXPECT_EQ(verified->claims_json, built->payload_json);
}

TEST_F(TokenTest, SignedTokensThatAreNotIJsonAreRejectedAsUnauthenticated) {
  const std::string header = R"({"alg":"ES256","typ":"JWT","kid":")" + key_->kid() + R"("})";
  // Two "exp": one reader takes the first, another the last.
  EXPECT_EQ(VerifyCode(SignRaw(header, R"({"exp":1,"exp":1800000000})")),
            StatusCode::kUnauthenticated);
  EXPECT_EQ(VerifyCode(SignRaw(header, R"({"exp":1800000000,"uid":123456789012345678901})")),
            StatusCode::kUnauthenticated);
  EXPECT_EQ(VerifyCode(SignRaw(header, "{\"exp\":1800000000,\"s\":\"\\ud800\"}")),
            StatusCode::kUnauthenticated);
  const std::string dup_header =
      R"({"alg":"ES256","alg":"none","kid":")" + key_->kid() + R"("})";
  EXPECT_EQ(VerifyCode(SignRaw(dup_header, R"({"exp":1800000000})")),
            StatusCode::kUnauthenticated);
  EXPECT_EQ(VerifyCode(SignRaw(header, R"({"exp":1800000000})")), StatusCode::kOk);
  // Too long, empty, not even a token: every rejection is UNAUTHENTICATED.
  EXPECT_EQ(VerifyCode(std::string(kMaxTokenBytes + 1, 'a')), StatusCode::kUnauthenticated);
  EXPECT_EQ(VerifyCode(""), StatusCode::kUnauthenticated);
  EXPECT_EQ(VerifyCode("\xff\xfe"), StatusCode::kUnauthenticated);
}

// --- Encoding

TEST_F(TokenTest, HeaderIsExactlyAlgTypKid) {
  const std::vector<std::string> parts = Split(Token());
  ASSERT_EQ(parts.size(), 3u);
  EXPECT_EQ(Unb64(parts[0]), R"({"alg":"ES256","typ":"JWT","kid":")" + key_->kid() + R"("})");
  EXPECT_EQ(Unb64(parts[2]).size(), 64u);
  EXPECT_EQ(Json::parse(Unb64(parts[1]))["sub"], "u1");
}

TEST_F(TokenTest, SignedTokenVerifiesAndReturnsItsClaims) {
  auto verified = VerifyCompact(Token(), Lookup(), kNow + 10, 60);
  ASSERT_TRUE(verified.ok()) << verified.status();
  EXPECT_EQ(verified->kid, key_->kid());
  EXPECT_EQ(verified->expires_at, kNow + 600);
  EXPECT_EQ(Json::parse(verified->claims_json)["sub"], "u1");
}

TEST_F(TokenTest, Rfc7515AppendixA3TokenVerifies) {
  auto a3 = Es256PublicKey::FromJwk(
      R"({"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"})");
  ASSERT_TRUE(a3.ok()) << a3.status();
  const std::string token =
      "eyJhbGciOiJFUzI1NiJ9."
      "eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ."
      "DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q";
  KeyLookup lookup = [&](std::string_view kid) -> const Es256PublicKey* {
    return kid.empty() ? a3->get() : nullptr;  // the example header has no kid
  };
  auto verified = VerifyCompact(token, lookup, 1300819300, 0);
  ASSERT_TRUE(verified.ok()) << verified.status();
  EXPECT_EQ(verified->expires_at, 1300819380);
  EXPECT_EQ(VerifyCompact(token, lookup, 1300819380, 0).status().code(),
            StatusCode::kUnauthenticated);  // at exp: expired
}

TEST_F(TokenTest, TamperedPayloadSignatureOrHeaderIsRejected) {
  const std::vector<std::string> parts = Split(Token());
  Json payload = Json::parse(Unb64(parts[1]));
  payload["sub"] = "admin";
  EXPECT_EQ(VerifyCode(parts[0] + "." + B64(payload.dump()) + "." + parts[2]),
            StatusCode::kUnauthenticated);
  std::vector<uint8_t> sig = *Base64UrlDecode(parts[2]);
  sig[10] ^= 0x20;
  EXPECT_EQ(VerifyCode(parts[0] + "." + parts[1] + "." + Base64UrlEncode(sig)),
            StatusCode::kUnauthenticated);
  const std::string header =
      R"({"alg":"ES256","typ":"at+jwt","kid":")" + key_->kid() + R"("})";
  EXPECT_EQ(VerifyCode(B64(header) + "." + parts[1] + "." + parts[2]),
            StatusCode::kUnauthenticated);
  EXPECT_EQ(VerifyCode(Token()), StatusCode::kOk);
}

TEST_F(TokenTest, AlgNoneAndOtherAlgorithmsAreRejected) {
  const std::vector<std::string> parts = Split(Token());
  const std::string kid = key_->kid();
  // Unsigned.
  EXPECT_EQ(VerifyCode(B64(R"({"alg":"none","kid":")" + kid + R"("})") + "." + parts[1] + "."),
            StatusCode::kUnauthenticated);
  // Signed with our key, but labelled otherwise: the label alone must refuse it.
  for (const char* alg : {"none", "HS256", "ES384", "RS256", "es256", ""}) {
    const std::string header = std::string(R"({"alg":")") + alg + R"(","kid":")" + kid + R"("})";
    EXPECT_EQ(VerifyCode(SignRaw(header, Unb64(parts[1]))), StatusCode::kUnauthenticated) << alg;
  }
  EXPECT_EQ(VerifyCode(SignRaw(R"({"kid":")" + kid + R"("})", Unb64(parts[1]))),
            StatusCode::kUnauthenticated);
}

TEST_F(TokenTest, CritAndB64HeadersAreRejected) {
  const std::string payload = R"({"exp":1700000600})";
  const std::string kid = key_->kid();
  EXPECT_EQ(VerifyCode(SignRaw(R"({"alg":"ES256","kid":")" + kid + R"("})", payload)),
            StatusCode::kOk);
  EXPECT_EQ(VerifyCode(SignRaw(R"({"alg":"ES256","crit":["x"],"x":1,"kid":")" + kid + R"("})",
                               payload)),
            StatusCode::kUnauthenticated);
  EXPECT_EQ(VerifyCode(SignRaw(R"({"alg":"ES256","b64":false,"kid":")" + kid + R"("})",
                               payload)),
            StatusCode::kUnauthenticated);
}

TEST_F(TokenTest, UnknownOrMissingKidIsRejected) {
  const std::string payload = R"({"exp":1700000600})";
  EXPECT_EQ(VerifyCode(SignRaw(R"({"alg":"ES256","kid":"other"})", payload)),
            StatusCode::kUnauthenticated);
  EXPECT_EQ(VerifyCode(SignRaw(R"({"alg":"ES256"})", payload)), StatusCode::kUnauthenticated);
  EXPECT_EQ(VerifyCode(SignRaw(R"({"alg":"ES256","kid":7})", payload)),
            StatusCode::kUnauthenticated);
}

TEST_F(TokenTest, ExpiryAndNotBeforeHonourTheLeeway) {
  const std::string token = Token(R"({"nbf":1700000100})", 600);  // exp = kNow + 600
  EXPECT_EQ(VerifyCode(token, kNow + 100), StatusCode::kOk);
  EXPECT_EQ(VerifyCode(token, kNow + 40), StatusCode::kOk);               // nbf - leeway
  EXPECT_EQ(VerifyCode(token, kNow + 39), StatusCode::kUnauthenticated);  // too early
  EXPECT_EQ(VerifyCode(token, kNow + 600 + 59), StatusCode::kOk);
  EXPECT_EQ(VerifyCode(token, kNow + 600 + 60), StatusCode::kUnauthenticated);  // expired
}

TEST_F(TokenTest, PayloadWithoutNumericExpIsRejected) {
  const std::string header = R"({"alg":"ES256","kid":")" + key_->kid() + R"("})";
  EXPECT_EQ(VerifyCode(SignRaw(header, R"({"sub":"x"})")), StatusCode::kUnauthenticated);
  EXPECT_EQ(VerifyCode(SignRaw(header, R"({"exp":"1700000600"})")), StatusCode::kUnauthenticated);
  EXPECT_EQ(VerifyCode(SignRaw(header, R"([1700000600])")), StatusCode::kUnauthenticated);
  EXPECT_EQ(VerifyCode(SignRaw(header, R"({"exp":1700000600,"iat":1700009999})")),
            StatusCode::kUnauthenticated);  // issued in the future
}

TEST_F(TokenTest, MalformedStructureIsRejected) {
  const std::string token = Token();
  const std::vector<std::string> parts = Split(token);
  for (const std::string& bad :
       {std::string(""), std::string("."), std::string(".."), parts[0] + "." + parts[1],
        token + ".", token + ".x", parts[0] + "." + parts[1] + "." + parts[2] + "=",
        parts[0] + "=." + parts[1] + "." + parts[2], " " + token, token + "\n",
        parts[0] + ".." + parts[2], std::string(kMaxTokenBytes + 1, 'a')}) {
    EXPECT_EQ(VerifyCode(bad), StatusCode::kUnauthenticated) << bad.substr(0, 40);
  }
  EXPECT_EQ(ParseCompact(parts[0] + "." + parts[1]).status().code(),
            StatusCode::kInvalidArgument);
}

// Fuzz-style: random bytes and random mutations of a good token never crash, never
// throw, and never verify.
TEST_F(TokenTest, RandomInputsAndMutationsAreRejectedWithoutThrowing) {
  std::mt19937 rng(1234);
  const std::string good = Token();
  const std::string alphabet =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/{}\":, \x00\xff";
  for (int i = 0; i < 2000; ++i) {
    std::string s;
    if (i % 2 == 0) {
      const size_t len = rng() % 200;
      for (size_t j = 0; j < len; ++j) s.push_back(alphabet[rng() % alphabet.size()]);
    } else {
      s = good;
      const int edits = 1 + rng() % 3;
      for (int e = 0; e < edits; ++e) {
        s[rng() % s.size()] = alphabet[rng() % alphabet.size()];
      }
      if (s == good) continue;
    }
    EXPECT_NO_THROW({
      auto r = VerifyCompact(s, Lookup(), kNow, 60);
      EXPECT_FALSE(r.ok()) << s;
    });
  }
  // Claims input is fuzz-safe too.
  for (int i = 0; i < 2000; ++i) {
    std::string s = "{";
    const size_t len = rng() % 64;
    for (size_t j = 0; j < len; ++j) s.push_back(alphabet[rng() % alphabet.size()]);
    EXPECT_NO_THROW((void)BuildClaims(s, 0, kNow, Policy()));
  }
}

}  // namespace
}  // namespace kms::jwt
