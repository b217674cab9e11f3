// JwtService with FakeKekRing (over a FakeHsm), a real SQLite store (in memory), a store-cutting wrapper and a
// simulated clock. Time only moves when a test moves it.
#include "src/jwt/jwt_service.h"

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <latch>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "src/common/base64.h"
#include "src/store/sqlite/sqlite_key_store.h"
#include "tests/fakes/fake_kek_ring.h"
#include "tests/fakes/injecting_key_store.h"
#include "tests/test_common/simulated_clock.h"
#include "tests/mocks/mock_kek_ring.h"

namespace kms::jwt {
namespace {

using ::kms::testing::SimulatedClock;

using ::absl::StatusCode;
using Json = nlohmann::json;
using S = KeyLifecycleState;

#define ASSERT_OK(expr)                     \
  do {                                      \
    const ::absl::Status st_ = (expr);      \
    ASSERT_TRUE(st_.ok()) << st_;           \
  } while (0)

// A relying party that knows nothing but the JWKS: it fetches it from a replica, keeps
// it for the advertised max-age, and verifies with the same leeway kmsd uses.
class RelyingParty {
 public:
  void Fetch(const JwtService& service, int64_t now) {
    auto doc = service.Jwks();
    ASSERT_TRUE(doc.ok()) << doc.status();
    Json jwks = Json::parse(doc->json);
    keys_.clear();
    for (const Json& jwk : jwks.at("keys")) {
      auto key = Es256PublicKey::FromJwk(jwk.dump());
      ASSERT_TRUE(key.ok()) << key.status();
      keys_.push_back(std::move(*key));
    }
    fetched_at_ = now;
    max_age_ = doc->max_age_seconds;
  }
  // Refetches only when the cached copy is stale, as an HTTP cache would.
  void MaybeFetch(const JwtService& service, int64_t now) {
    if (fetched_at_ < 0 || now >= fetched_at_ + max_age_) Fetch(service, now);
  }
  absl::Status Verify(const std::string& token, int64_t now) const {
    KeyLookup lookup = [this](std::string_view kid) -> const Es256PublicKey* {
      for (const auto& k : keys_) {
        if (k->kid() == kid) return k.get();
      }
      return nullptr;
    };
    return VerifyCompact(token, lookup, now, 60).status();
  }
  bool Has(const std::string& kid) const {
    for (const auto& k : keys_) {
      if (k->kid() == kid) return true;
    }
    return false;
  }

 private:
  std::vector<std::unique_ptr<Es256PublicKey>> keys_;
  int64_t fetched_at_ = -1;
  int64_t max_age_ = 0;
};

class JwtServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto opened = store::SqliteKeyStore::Open(":memory:");
    ASSERT_TRUE(opened.ok()) << opened.status();
    sqlite_ = std::move(*opened);
    store_ = std::make_unique<kms::testing::InjectingKeyStore>(sqlite_.get());
    ASSERT_TRUE(ring_.CreateKek(1).ok());
  }

  static JwtServiceOptions Options() {
    JwtServiceOptions o;
    o.issuer = "https://iam.example";
    return o;
  }

  std::unique_ptr<JwtService> Service(JwtServiceOptions options = Options(), bool load = true) {
    auto made = JwtService::Create(&ring_, store_.get(), store_.get(), &clock_, options);
    EXPECT_TRUE(made.ok()) << made.status();
    if (!made.ok()) return nullptr;
    if (load) {
      absl::Status st = (*made)->Load();
      EXPECT_TRUE(st.ok()) << st;
    }
    return std::move(*made);
  }

  void Advance(int64_t seconds) { clock_.Advance(std::chrono::seconds(seconds)); }
  int64_t Now() const { return clock_.UnixSeconds(); }

  static SignedJwt SignOk(const JwtService& s, const std::string& claims = R"({"sub":"u1"})",
                          int64_t ttl = 0) {
    auto signed_jwt = s.Sign(claims, ttl);
    EXPECT_TRUE(signed_jwt.ok()) << signed_jwt.status();
    return signed_jwt.ok() ? *signed_jwt : SignedJwt{};
  }

  static std::vector<std::string> JwksKids(const JwtService& s) {
    auto doc = s.Jwks();
    EXPECT_TRUE(doc.ok()) << doc.status();
    std::vector<std::string> kids;
    if (!doc.ok()) return kids;
    const Json jwks = Json::parse(doc->json);
    for (const Json& k : jwks.at("keys")) kids.push_back(k.at("kid"));
    return kids;
  }
  static bool InJwks(const JwtService& s, const std::string& kid) {
    auto kids = JwksKids(s);
    return std::find(kids.begin(), kids.end(), kid) != kids.end();
  }

  size_t StoredKeys() {
    auto keys = sqlite_->ListJwtKeys();
    EXPECT_TRUE(keys.ok()) << keys.status();
    return keys.ok() ? keys->size() : 0;
  }

  kms::testing::FakeKekRing ring_;
  kms::testing::FakeHsm& hsm_ = ring_.hsm();
  SimulatedClock clock_;
  std::unique_ptr<store::SqliteKeyStore> sqlite_;
  std::unique_ptr<kms::testing::InjectingKeyStore> store_;
};

// --- Loading

TEST_F(JwtServiceTest, NothingIsServedBeforeLoad) {
  auto s = Service(Options(), /*load=*/false);
  ASSERT_NE(s, nullptr);
  EXPECT_FALSE(s->ready());
  EXPECT_EQ(s->state(), S::kLoading);
  EXPECT_EQ(s->Sign("{}", 0).status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(s->Verify("a.b.c").status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(s->Jwks().status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(s->Rotate().status().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(s->Ack().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(s->Status().state_name, "loading");
}

TEST_F(JwtServiceTest, LoadCreatesTheFirstKeyWhichSignsAndIsPublished) {
  auto s = Service();
  ASSERT_NE(s, nullptr);
  EXPECT_TRUE(s->ready());
  EXPECT_EQ(s->state(), S::kActive);
  EXPECT_EQ(StoredKeys(), 1u);
  SignedJwt t = SignOk(*s);
  EXPECT_EQ(t.kid, s->Status().signing_kid);
  EXPECT_EQ(JwksKids(*s), std::vector<std::string>{t.kid});
  auto verified = s->Verify(t.jwt);
  ASSERT_TRUE(verified.ok()) << verified.status();
  EXPECT_EQ(Json::parse(verified->claims_json)["sub"], "u1");
  auto doc = s->Jwks();
  ASSERT_TRUE(doc.ok());
  EXPECT_EQ(doc->max_age_seconds, 300);
  EXPECT_EQ(doc->CacheControl(), "public, max-age=300");
}

TEST_F(JwtServiceTest, LoadWithTheStoreDownStaysLoadingAndTickRetries) {
  auto s = Service(Options(), /*load=*/false);
  ASSERT_NE(s, nullptr);
  store_->SetUnavailable(true);
  EXPECT_EQ(s->Load().code(), StatusCode::kUnavailable);
  EXPECT_EQ(s->state(), S::kLoading);
  store_->SetUnavailable(false);
  ASSERT_OK(s->Tick());
  EXPECT_EQ(s->state(), S::kActive);
}

TEST_F(JwtServiceTest, ARestartLoadsTheStoredKeyAndVerifiesItsTokens) {
  std::string token, kid;
  {
    auto first = Service();
    ASSERT_NE(first, nullptr);
    SignedJwt t = SignOk(*first);
    token = t.jwt;
    kid = t.kid;
  }
  const uint64_t seals = hsm_.seals();
  auto second = Service();
  ASSERT_NE(second, nullptr);
  EXPECT_EQ(hsm_.seals(), seals);  // no new key
  EXPECT_EQ(second->Status().signing_kid, kid);
  EXPECT_TRUE(second->Verify(token).ok());
  EXPECT_EQ(StoredKeys(), 1u);
}

TEST_F(JwtServiceTest, ReplicasStartingTogetherShareOneFirstKey) {
  std::vector<std::unique_ptr<JwtService>> services;
  for (int i = 0; i < 4; ++i) services.push_back(Service(Options(), /*load=*/false));
  std::latch start(4);
  std::vector<absl::Status> results(4);
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&, i] {
      start.arrive_and_wait();
      results[i] = services[i]->Load();
    });
  }
  for (auto& t : threads) t.join();
  for (const auto& r : results) EXPECT_TRUE(r.ok()) << r;
  EXPECT_EQ(StoredKeys(), 1u);
  for (const auto& s : services) {
    EXPECT_EQ(s->Status().signing_kid, services[0]->Status().signing_kid);
  }
}

// --- Signing contract

TEST_F(JwtServiceTest, SignSetsIatExpIssAndKid) {
  auto s = Service();
  ASSERT_NE(s, nullptr);
  SignedJwt t = SignOk(*s, R"({"sub":"u1","roles":["admin"]})", 300);
  EXPECT_EQ(t.issued_at, Now());
  EXPECT_EQ(t.expires_at, Now() + 300);
  auto v = s->Verify(t.jwt);
  ASSERT_TRUE(v.ok()) << v.status();
  Json claims = Json::parse(v->claims_json);
  EXPECT_EQ(claims["iss"], "https://iam.example");
  EXPECT_EQ(claims["iat"], t.issued_at);
  EXPECT_EQ(claims["exp"], t.expires_at);
  EXPECT_EQ(claims["roles"], Json::array({"admin"}));
  EXPECT_EQ(SignOk(*s, "{}", 0).expires_at, Now() + 900);  // ttl 0: the default
}

TEST_F(JwtServiceTest, BadSignRequestsAreInvalidArgument) {
  auto s = Service();
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(s->Sign("[1,2]", 0).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s->Sign("\"sub\"", 0).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s->Sign("", 0).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s->Sign(R"({"p":")" + std::string(9000, 'x') + "\"}", 0).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(s->Sign("{}", 901).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s->Sign("{}", -5).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s->Sign(R"({"exp":1})", 0).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s->Sign(R"({"iat":1})", 0).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s->Sign(R"({"iss":"https://other.example"})", 0).status().code(),
            StatusCode::kInvalidArgument);
}

TEST_F(JwtServiceTest, VerifyRejectsExpiredForeignAndTamperedTokens) {
  auto s = Service();
  ASSERT_NE(s, nullptr);
  SignedJwt t = SignOk(*s, "{}", 60);
  Advance(60 + 59);
  EXPECT_TRUE(s->Verify(t.jwt).ok());  // within the leeway
  Advance(1);
  EXPECT_EQ(s->Verify(t.jwt).status().code(), StatusCode::kUnauthenticated);

  auto foreign_key = Es256PrivateKey::Generate();
  ASSERT_TRUE(foreign_key.ok());
  auto foreign = EncodeCompact(**foreign_key, R"({"exp":9999999999})");
  ASSERT_TRUE(foreign.ok());
  EXPECT_EQ(s->Verify(*foreign).status().code(), StatusCode::kUnauthenticated);

  SignedJwt fresh = SignOk(*s);
  std::string tampered = fresh.jwt;
  tampered[tampered.find('.') + 5] ^= 1;
  EXPECT_EQ(s->Verify(tampered).status().code(), StatusCode::kUnauthenticated);
}

// A document of another type (the Vault door's tokens) is signed by the same keys but is
// never taken for an access token, nor an access token for it, nor one type for another.
TEST_F(JwtServiceTest, DocumentsOfAnotherTypeAreNeverAccessTokens) {
  auto s = Service();
  ASSERT_NE(s, nullptr);
  auto doc = s->SignDocument("kmsd-vault-token+jwt", R"({"sub":"spiffe://x/y"})", 60);
  ASSERT_TRUE(doc.ok()) << doc.status();
  auto verified = s->VerifyDocument("kmsd-vault-token+jwt", doc->jwt);
  ASSERT_TRUE(verified.ok()) << verified.status();
  EXPECT_EQ(Json::parse(verified->claims_json)["sub"], "spiffe://x/y");
  EXPECT_EQ(verified->expires_at, Now() + 60);
  EXPECT_EQ(s->Verify(doc->jwt).status().code(), StatusCode::kUnauthenticated);
  EXPECT_EQ(s->VerifyDocument("other+jwt", doc->jwt).status().code(), StatusCode::kUnauthenticated);
  SignedJwt access = SignOk(*s, "{}", 60);
  EXPECT_EQ(s->VerifyDocument("kmsd-vault-token+jwt", access.jwt).status().code(),
            StatusCode::kUnauthenticated);
  // The access-token type cannot be asked for as a document type.
  EXPECT_EQ(s->SignDocument("JWT", "{}", 60).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s->SignDocument("", "{}", 60).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s->VerifyDocument("jwt", access.jwt).status().code(), StatusCode::kInvalidArgument);
  // The claims rules and the TTL bound are Sign's.
  EXPECT_EQ(s->SignDocument("kmsd-vault-token+jwt", "{}", 901).status().code(),
            StatusCode::kInvalidArgument);
  Advance(60 + 60);
  EXPECT_EQ(s->VerifyDocument("kmsd-vault-token+jwt", doc->jwt).status().code(),
            StatusCode::kUnauthenticated);
}

// --- Rotation without downtime

// One replica; the clock steps 5 s at a time through the whole rotation. At every step:
// every token issued so far verifies, until its exp, both for a relying party that
// fetches the JWKS right now and for one that caches it for the advertised max-age.
TEST_F(JwtServiceTest, RotationNeverMakesAValidTokenFail) {
  auto s = Service();
  ASSERT_NE(s, nullptr);
  Advance(3600);
  const SignedJwt before = SignOk(*s, R"({"sub":"before"})", 900);
  const std::string old_kid = before.kid;
  RelyingParty cached;
  cached.Fetch(*s, Now());

  auto rotation = s->Rotate();
  ASSERT_TRUE(rotation.ok()) << rotation.status();
  const std::string new_kid = rotation->new_kid;
  const int64_t rotated_at = Now();
  EXPECT_EQ(rotation->old_kid, old_kid);
  EXPECT_EQ(rotation->new_activate_at, rotated_at + 300 + 30 + 60);
  EXPECT_EQ(rotation->old_retire_at, rotation->new_activate_at + 900 + 60);

  std::vector<SignedJwt> issued = {before};
  int64_t first_new_signature = 0, new_published_at = 0, old_unpublished_at = 0;
  int64_t last_old_exp = before.expires_at;
  std::set<S> states_seen;
  for (int64_t step = 0; Now() <= rotation->old_retire_at + 120; ++step, Advance(5)) {
    const int64_t now = Now();
    SCOPED_TRACE(::testing::Message() << "t = rotation + " << now - rotated_at);
    if (step % 6 == 0) ASSERT_OK(s->Tick());
    states_seen.insert(s->state());
    if (new_published_at == 0 && InJwks(*s, new_kid)) new_published_at = now;
    if (old_unpublished_at == 0 && !InJwks(*s, old_kid)) old_unpublished_at = now;

    SignedJwt t = SignOk(*s, R"({"sub":"during"})", 900);
    if (t.kid == new_kid && first_new_signature == 0) first_new_signature = now;
    if (t.kid == old_kid) last_old_exp = std::max(last_old_exp, t.expires_at);
    if (step % 6 == 0) issued.push_back(t);

    RelyingParty fresh;
    fresh.Fetch(*s, now);
    cached.MaybeFetch(*s, now);
    for (const SignedJwt& token : issued) {
      if (now >= token.expires_at) continue;
      EXPECT_TRUE(fresh.Verify(token.jwt, now).ok()) << token.kid;
      EXPECT_TRUE(cached.Verify(token.jwt, now).ok()) << token.kid;
      EXPECT_TRUE(s->Verify(token.jwt).ok()) << token.kid;
    }
    EXPECT_TRUE(cached.Verify(t.jwt, now).ok());
  }
  EXPECT_EQ(new_published_at, rotated_at);
  ASSERT_NE(first_new_signature, 0);
  EXPECT_GE(first_new_signature - new_published_at, 300);  // one JWKS cache lifetime
  ASSERT_NE(old_unpublished_at, 0);
  EXPECT_GE(old_unpublished_at, last_old_exp + 60);  // after every old token expired
  EXPECT_EQ(states_seen, (std::set<S>{S::kActive, S::kDualActive}));
  EXPECT_EQ(s->state(), S::kActive);
  EXPECT_EQ(JwksKids(*s), std::vector<std::string>{new_kid});
}

// Two replicas, a relying party caching the JWKS from either, tokens from either: a
// replica learns of the other's rotation only at its next Tick, and still no token fails.
TEST_F(JwtServiceTest, RotationOnOneReplicaNeverFailsTokensOfEitherForCachingVerifiers) {
  auto a = Service();
  auto b = Service();
  ASSERT_TRUE(a && b);
  std::vector<RelyingParty> parties(2);
  std::vector<SignedJwt> issued;
  bool rotated = false;
  int64_t retire_at = 0;
  const int64_t start = Now();
  for (int64_t step = 0; !rotated || Now() <= retire_at + 100; ++step, Advance(5)) {
    const int64_t now = Now();
    SCOPED_TRACE(::testing::Message() << "t = " << now - start);
    if (step % 6 == 0) ASSERT_OK(a->Tick());
    if (step % 6 == 3) ASSERT_OK(b->Tick());  // B ticks out of phase with A
    if (!rotated && now - start >= 301) {
      auto r = a->Rotate();
      ASSERT_TRUE(r.ok()) << r.status();
      retire_at = r->old_retire_at;
      rotated = true;
    }
    JwtService& signer = step % 2 == 0 ? *a : *b;
    SignedJwt t = SignOk(signer, "{}", 900);
    if (step % 4 == 0) issued.push_back(t);
    parties[0].MaybeFetch(*a, now);
    parties[1].MaybeFetch(*b, now);
    for (const RelyingParty& p : parties) {
      EXPECT_TRUE(p.Verify(t.jwt, now).ok()) << t.kid;
      for (const SignedJwt& token : issued) {
        if (now < token.expires_at) {
          EXPECT_TRUE(p.Verify(token.jwt, now).ok()) << token.kid;
        }
      }
    }
  }
}

TEST_F(JwtServiceTest, ASecondRotationWhileOneIsInProgressIsRefused) {
  auto s = Service();
  ASSERT_NE(s, nullptr);
  ASSERT_TRUE(s->Rotate().ok());
  EXPECT_EQ(s->Rotate().status().code(), StatusCode::kFailedPrecondition);
  Advance(391);
  auto again = s->Rotate();  // the next key signs now: rotating again is allowed
  EXPECT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(StoredKeys(), 3u);
}

TEST_F(JwtServiceTest, StatusShowsEachKeysPhase) {
  auto s = Service();
  ASSERT_NE(s, nullptr);
  auto r = s->Rotate();
  ASSERT_TRUE(r.ok());
  auto phases = [&] {
    std::map<std::string, std::string> out;
    for (const JwtKeyStatus& k : s->Status().keys) out[k.kid] = k.phase;
    return out;
  };
  EXPECT_EQ(phases(), (std::map<std::string, std::string>{{r->old_kid, "signing"},
                                                          {r->new_kid, "pending"}}));
  EXPECT_EQ(s->Status().next_rotation_at, 0);
  Advance(r->new_activate_at - Now());
  EXPECT_EQ(phases(), (std::map<std::string, std::string>{{r->old_kid, "verifying"},
                                                          {r->new_kid, "signing"}}));
  EXPECT_EQ(s->Status().state_name, "dual_active");
  Advance(r->old_retire_at - Now());
  EXPECT_EQ(phases(), (std::map<std::string, std::string>{{r->new_kid, "signing"}}));
  EXPECT_EQ(s->Status().state_name, "active");
  EXPECT_EQ(s->Status().next_rotation_at, r->new_activate_at + 7776000);
}

TEST_F(JwtServiceTest, ScheduledRotationHappensOnTickWhenTheSigningKeyIsDue) {
  JwtServiceOptions o = Options();
  o.rotation_period_seconds = 86400;
  auto s = Service(o);
  ASSERT_NE(s, nullptr);
  const int64_t due = s->Status().next_rotation_at;
  ASSERT_GT(due, Now());
  Advance(due - Now() - 1);
  ASSERT_OK(s->Tick());
  EXPECT_EQ(StoredKeys(), 1u);
  Advance(1);
  ASSERT_OK(s->Tick());
  EXPECT_EQ(StoredKeys(), 2u);
  ASSERT_OK(s->Tick());
  EXPECT_EQ(StoredKeys(), 2u);  // in progress: no second rotation
  Advance(390 + 960);
  ASSERT_OK(s->Tick());
  EXPECT_EQ(JwksKids(*s).size(), 1u);
  EXPECT_EQ(s->state(), S::kActive);
}

TEST_F(JwtServiceTest, ATokenOutlivingTheOverlapWindowIsRefused) {
  auto a = Service();  // max ttl 900: sets the overlap
  JwtServiceOptions longer = Options();
  longer.max_ttl_seconds = 3600;  // a misconfigured replica
  auto b = Service(longer);
  ASSERT_TRUE(a && b);
  auto r = a->Rotate();
  ASSERT_TRUE(r.ok());
  ASSERT_OK(b->Tick());
  // B still signs with the old key, which retires at activation + 900 + 60.
  EXPECT_EQ(b->Sign("{}", 3600).status().code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(b->Sign("{}", 900).ok());
  Advance(r->new_activate_at - Now());
  EXPECT_TRUE(b->Sign("{}", 3600).ok());  // the new key is not scheduled to retire
}

// --- Replicas

TEST_F(JwtServiceTest, ReplicasAgreeOnTheSigningKeyAndJwksWithoutTalking) {
  auto a = Service();
  auto b = Service();
  ASSERT_TRUE(a && b);
  auto agree = [&](const char* when) {
    SCOPED_TRACE(when);
    ASSERT_OK(a->Tick());
    ASSERT_OK(b->Tick());
    EXPECT_EQ(a->Status().signing_kid, b->Status().signing_kid);
    EXPECT_EQ(a->Jwks()->json, b->Jwks()->json);
    EXPECT_EQ(a->state(), b->state());
    EXPECT_TRUE(b->Verify(SignOk(*a).jwt).ok());
    EXPECT_TRUE(a->Verify(SignOk(*b).jwt).ok());
  };
  agree("at start");
  Advance(100);
  auto r = a->Rotate();
  ASSERT_TRUE(r.ok());
  agree("just after the rotation");
  Advance(200);
  agree("while the next key is pre-published");
  Advance(r->new_activate_at - Now());
  agree("at activation");
  EXPECT_EQ(b->Status().signing_kid, r->new_kid);
  Advance(500);
  agree("during the overlap");
  Advance(r->old_retire_at - Now());
  agree("at retirement");
  Advance(86400);
  agree("a day later");
}

TEST_F(JwtServiceTest, RacingRotationsFromTwoReplicasMakeExactlyOneNewKey) {
  auto a = Service();
  auto b = Service();
  ASSERT_TRUE(a && b);
  for (int round = 0; round < 4; ++round) {
    SCOPED_TRACE(::testing::Message() << "round " << round);
    ASSERT_OK(a->Tick());
    ASSERT_OK(b->Tick());
    constexpr int kThreads = 4;
    std::latch start(kThreads);
    std::vector<absl::StatusOr<RotationResult>> results(kThreads,
                                                        absl::UnknownError("not run"));
    std::vector<std::thread> threads;
    for (int i = 0; i < kThreads; ++i) {
      threads.emplace_back([&, i] {
        start.arrive_and_wait();
        results[i] = (i % 2 == 0 ? a : b)->Rotate();
      });
    }
    for (auto& t : threads) t.join();
    int ok = 0;
    for (const auto& r : results) {
      if (r.ok()) {
        ++ok;
      } else {
        EXPECT_TRUE(absl::IsAborted(r.status()) || absl::IsFailedPrecondition(r.status()))
            << r.status();
      }
    }
    EXPECT_EQ(ok, 1);
    EXPECT_EQ(StoredKeys(), static_cast<size_t>(round + 2));
    Advance(390 + 960 + 10);
    ASSERT_OK(a->Tick());
    ASSERT_OK(b->Tick());
    EXPECT_EQ(a->Status().signing_kid, b->Status().signing_kid);
  }
}

// --- Degraded and Critical

TEST_F(JwtServiceTest, StoreOutageDegradesButSigningContinuesAndRotationIsRefused) {
  auto s = Service();
  ASSERT_NE(s, nullptr);
  store_->SetUnavailable(true);
  Advance(10);
  EXPECT_EQ(s->Tick().code(), StatusCode::kUnavailable);
  EXPECT_EQ(s->state(), S::kDegraded);
  EXPECT_EQ(s->Status().degraded_since, Now());
  EXPECT_FALSE(s->Status().backends_ok);
  SignedJwt t = SignOk(*s);
  EXPECT_TRUE(s->Verify(t.jwt).ok());
  EXPECT_TRUE(s->Jwks().ok());
  EXPECT_EQ(s->Rotate().status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(s->Ack().code(), StatusCode::kFailedPrecondition);

  store_->SetUnavailable(false);
  ASSERT_OK(s->Tick());
  EXPECT_EQ(s->state(), S::kActive);
  EXPECT_EQ(s->Status().degraded_since, 0);
  EXPECT_TRUE(s->Rotate().ok());
}

TEST_F(JwtServiceTest, HsmOutageDegradesToo) {
  auto s = Service();
  ASSERT_NE(s, nullptr);
  hsm_.SetUnavailable(true);
  EXPECT_EQ(s->Tick().code(), StatusCode::kUnavailable);
  EXPECT_EQ(s->state(), S::kDegraded);
  EXPECT_TRUE(s->Sign("{}", 0).ok());
  hsm_.SetUnavailable(false);
  ASSERT_OK(s->Tick());
  EXPECT_EQ(s->state(), S::kActive);
}

TEST_F(JwtServiceTest, DegradedDuringARotationStillActivatesTheNextKeyOnTime) {
  auto s = Service();
  ASSERT_NE(s, nullptr);
  auto r = s->Rotate();
  ASSERT_TRUE(r.ok());
  store_->SetUnavailable(true);
  EXPECT_FALSE(s->Tick().ok());
  Advance(r->new_activate_at - Now());
  EXPECT_EQ(s->state(), S::kDegraded);
  EXPECT_EQ(SignOk(*s).kid, r->new_kid);
}

TEST_F(JwtServiceTest, DegradedLongerThanKeyMaxAgeIsCriticalAndKeepsSigning) {
  auto s = Service();
  ASSERT_NE(s, nullptr);
  store_->SetUnavailable(true);
  EXPECT_FALSE(s->Tick().ok());
  Advance(604800 - 1);
  EXPECT_EQ(s->state(), S::kDegraded);
  Advance(1);
  EXPECT_EQ(s->state(), S::kCritical);  // shown without waiting for a tick
  EXPECT_FALSE(s->Tick().ok());
  EXPECT_EQ(s->Status().state_name, "critical");
  EXPECT_TRUE(s->Verify(SignOk(*s).jwt).ok());
}

TEST_F(JwtServiceTest, FailClosedWhenCriticalRefusesToSign) {
  JwtServiceOptions o = Options();
  o.fail_closed_when_critical = true;
  auto s = Service(o);
  ASSERT_NE(s, nullptr);
  const SignedJwt early = SignOk(*s, "{}", 900);
  store_->SetUnavailable(true);
  EXPECT_FALSE(s->Tick().ok());
  Advance(600);
  EXPECT_TRUE(s->Sign("{}", 0).ok());  // degraded: still signing
  Advance(604800);
  EXPECT_EQ(s->Sign("{}", 0).status().code(), StatusCode::kUnavailable);
  EXPECT_TRUE(s->Jwks().ok());
  store_->SetUnavailable(false);
  ASSERT_OK(s->Tick());
  EXPECT_EQ(s->Sign("{}", 0).status().code(), StatusCode::kUnavailable);  // still critical
  ASSERT_OK(s->Ack());
  EXPECT_TRUE(s->Sign("{}", 0).ok());
  (void)early;
}

TEST_F(JwtServiceTest, AckLeavesCriticalOnlyOnceTheBackendIsBack) {
  auto s = Service();
  ASSERT_NE(s, nullptr);
  store_->SetUnavailable(true);
  EXPECT_FALSE(s->Tick().ok());
  Advance(604800 + 5);
  EXPECT_FALSE(s->Tick().ok());
  ASSERT_EQ(s->state(), S::kCritical);
  EXPECT_EQ(s->Ack().code(), StatusCode::kUnavailable);
  EXPECT_EQ(s->state(), S::kCritical);

  store_->SetUnavailable(false);
  ASSERT_OK(s->Tick());
  EXPECT_EQ(s->state(), S::kCritical);  // latched until an operator acts
  EXPECT_TRUE(s->Status().backends_ok);
  EXPECT_NE(s->Status().degraded_since, 0);
  ASSERT_OK(s->Ack());
  EXPECT_EQ(s->state(), S::kActive);
  EXPECT_EQ(s->Status().degraded_since, 0);
  EXPECT_EQ(s->Ack().code(), StatusCode::kFailedPrecondition);
}

TEST_F(JwtServiceTest, AManualRotationLeavesCriticalOnceTheBackendIsBack) {
  auto s = Service();
  ASSERT_NE(s, nullptr);
  hsm_.SetUnavailable(true);
  EXPECT_FALSE(s->Tick().ok());
  Advance(604800);
  ASSERT_EQ(s->state(), S::kCritical);
  EXPECT_EQ(s->Rotate().status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(s->state(), S::kCritical);
  hsm_.SetUnavailable(false);
  auto r = s->Rotate();
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(s->state(), S::kActive);
}

TEST_F(JwtServiceTest, ScheduledRotationWaitsWhileCritical) {
  JwtServiceOptions o = Options();
  o.rotation_period_seconds = 86400;
  auto s = Service(o);
  ASSERT_NE(s, nullptr);
  store_->SetUnavailable(true);
  EXPECT_FALSE(s->Tick().ok());
  Advance(604800);
  store_->SetUnavailable(false);
  ASSERT_OK(s->Tick());
  EXPECT_EQ(s->state(), S::kCritical);
  EXPECT_EQ(StoredKeys(), 1u);
  ASSERT_OK(s->Ack());
  ASSERT_OK(s->Tick());  // now due (key older than a day): rotates
  EXPECT_EQ(StoredKeys(), 2u);
}

// --- Key wrapping

TEST_F(JwtServiceTest, AadIsLabelKidLengthKidAndKekVersion) {
  const std::vector<uint8_t> aad = JwtKeyAad("ab", 0x01020304);
  const std::string label = "kmsd:jwt:v1";
  std::vector<uint8_t> expected(label.begin(), label.end());
  for (int b : {0, 0, 0, 2, 0x61, 0x62, 1, 2, 3, 4}) expected.push_back(static_cast<uint8_t>(b));
  EXPECT_EQ(aad, expected);
}

TEST_F(JwtServiceTest, AWrappedKeyMovedToAnotherKidDoesNotLoad) {
  auto a = Service();
  ASSERT_NE(a, nullptr);
  auto rows = sqlite_->ListJwtKeys();
  ASSERT_TRUE(rows.ok() && rows->size() == 1);
  auto other = Es256PrivateKey::Generate();
  ASSERT_TRUE(other.ok());
  store::JwtKeyRecord forged = (*rows)[0];
  forged.kid = (*other)->kid();
  forged.public_jwk = (*other)->public_key().JwkJson();

  auto second = store::SqliteKeyStore::Open(":memory:");
  ASSERT_TRUE(second.ok());
  ASSERT_OK((*second)->InsertFirstJwtKey(forged));
  auto s = JwtService::Create(&ring_, second->get(), second->get(), &clock_, Options());
  ASSERT_TRUE(s.ok());
  EXPECT_FALSE((*s)->Load().ok());
  EXPECT_EQ((*s)->state(), S::kLoading);
}

TEST_F(JwtServiceTest, RewrapMovesEveryKeyToTheNewKekAndTheyStillLoad) {
  auto s = Service();
  ASSERT_NE(s, nullptr);
  ASSERT_TRUE(s->Rotate().ok());
  const SignedJwt t = SignOk(*s);
  ASSERT_TRUE(ring_.CreateKek(2).ok());
  auto n = s->RewrapKeys(2);
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, 2);
  auto rows = sqlite_->ListJwtKeys();
  ASSERT_TRUE(rows.ok());
  for (const auto& row : *rows) EXPECT_EQ(row.kek_version, 2u);
  EXPECT_EQ(*s->RewrapKeys(2), 0);

  ASSERT_OK(hsm_.UnloadKek(1));  // the old KEK is no longer needed
  ring_.set_loads_from_table(false);
  auto restarted = Service();
  ASSERT_NE(restarted, nullptr);
  EXPECT_TRUE(restarted->Verify(t.jwt).ok());
  ASSERT_OK(s->Tick());
  EXPECT_TRUE(s->Rotate().status().code() == StatusCode::kFailedPrecondition);  // in progress
}

// --- Options

// --- Shred receipts

// Verifies a receipt as an auditor would: only the receipt-key JWKS, the signature, and
// the header's typ; returns the payload.
absl::StatusOr<Json> VerifyReceipt(const std::string& jwks_json, const std::string& jws) {
  KMS_ASSIGN_OR_RETURN(ParsedJwt parsed, ParseCompact(jws));
  const Json header = Json::parse(parsed.header_json);
  if (header.value("typ", "") != kShredReceiptType) return absl::InvalidArgumentError("typ");
  const Json jwks = Json::parse(jwks_json);
  for (const Json& jwk : jwks.at("keys")) {
    auto key = Es256PublicKey::FromJwk(jwk.dump());
    if (!key.ok() || (*key)->kid() != parsed.kid) continue;
    std::span<const uint8_t> input(reinterpret_cast<const uint8_t*>(parsed.signing_input.data()),
                                   parsed.signing_input.size());
    KMS_RETURN_IF_ERROR((*key)->Verify(input, parsed.signature));
    return Json::parse(parsed.payload_json);
  }
  return absl::NotFoundError("no receipt key with the receipt's kid");
}

ShredReceiptClaims AcmeShred(int64_t at) {
  return ShredReceiptClaims{.tenant = "acme",
                            .destroyed_dek_versions = {1, 2, 3},
                            .shredded_at = at,
                            .node = "node-a"};
}

TEST_F(JwtServiceTest, AShredReceiptIsSignedWithItsOwnTypAndTheClaimsItAttests) {
  auto s = Service();
  ASSERT_NE(s, nullptr);
  auto receipt = s->SignShredReceipt(AcmeShred(Now()));
  ASSERT_TRUE(receipt.ok()) << receipt.status();
  EXPECT_EQ(receipt->kid, s->Status().signing_kid);

  auto parsed = ParseCompact(receipt->jws);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(Json::parse(parsed->header_json),
            Json({{"alg", "ES256"}, {"typ", "kmsd-shred-receipt+jwt"}, {"kid", receipt->kid}}));
  EXPECT_EQ(Json::parse(parsed->payload_json),
            Json({{"tenant", "acme"},
                  {"destroyed_dek_versions", {1, 2, 3}},
                  {"shredded_at", Now()},
                  {"iat", Now()},
                  {"node", "node-a"},
                  {"iss", "https://iam.example"}}));

  auto keys = s->ReceiptKeys();
  ASSERT_TRUE(keys.ok()) << keys.status();
  auto payload = VerifyReceipt(keys->json, receipt->jws);
  ASSERT_TRUE(payload.ok()) << payload.status();
  EXPECT_EQ((*payload)["tenant"], "acme");

  ShredReceiptClaims again = AcmeShred(Now());
  again.already_shredded = true;
  auto repeat = s->SignShredReceipt(again);
  ASSERT_TRUE(repeat.ok());
  EXPECT_EQ(Json::parse(ParseCompact(repeat->jws)->payload_json)["already_shredded"], true);
}

TEST_F(JwtServiceTest, AReceiptIsNeverAcceptedAsAnAccessToken) {
  auto s = Service();
  ASSERT_NE(s, nullptr);
  auto receipt = s->SignShredReceipt(AcmeShred(Now()));
  ASSERT_TRUE(receipt.ok()) << receipt.status();
  auto verified = s->Verify(receipt->jws);
  EXPECT_EQ(verified.status().code(), StatusCode::kUnauthenticated);
  EXPECT_THAT(std::string(verified.status().message()), ::testing::HasSubstr("typ"));

  // Even with an exp (as if a receipt carried one), the typ alone refuses it; a token
  // typed "jwt" in another case is still a token (RFC 7515 §4.1.9).
  auto key = Es256PrivateKey::Generate();
  ASSERT_TRUE(key.ok());
  const Es256PublicKey& pub = (*key)->public_key();
  KeyLookup lookup = [&](std::string_view) { return &pub; };
  const std::string payload = absl::StrCat(R"({"exp":)", Now() + 60, "}");
  auto typed = EncodeCompact(**key, payload, kShredReceiptType);
  ASSERT_TRUE(typed.ok());
  EXPECT_EQ(VerifyCompact(*typed, lookup, Now(), 0).status().code(), StatusCode::kUnauthenticated);
  auto lower = EncodeCompact(**key, payload, "jwt");
  ASSERT_TRUE(lower.ok());
  EXPECT_TRUE(VerifyCompact(*lower, lookup, Now(), 0).ok());
  auto access = EncodeCompact(**key, payload);
  ASSERT_TRUE(access.ok());
  EXPECT_TRUE(VerifyCompact(*access, lookup, Now(), 0).ok());
}

TEST_F(JwtServiceTest, AReceiptStillVerifiesAfterItsKeyIsRotatedOutAndRetired) {
  auto s = Service();
  ASSERT_NE(s, nullptr);
  auto receipt = s->SignShredReceipt(AcmeShred(Now()));
  ASSERT_TRUE(receipt.ok()) << receipt.status();
  const std::string old_kid = receipt->kid;

  auto rotation = s->Rotate();
  ASSERT_TRUE(rotation.ok()) << rotation.status();
  Advance(rotation->old_retire_at - Now() + 1);
  ASSERT_OK(s->Tick());
  EXPECT_FALSE(InJwks(*s, old_kid));  // gone from the access-token JWKS

  auto keys = s->ReceiptKeys();
  ASSERT_TRUE(keys.ok()) << keys.status();
  std::vector<std::string> kids;
  const Json listed_keys = Json::parse(keys->json);
  for (const Json& k : listed_keys.at("keys")) kids.push_back(k.at("kid"));
  EXPECT_EQ(kids, (std::vector<std::string>{old_kid, rotation->new_kid}));
  EXPECT_TRUE(VerifyReceipt(keys->json, receipt->jws).ok());

  // A new replica (a restart) lists it too: it comes from the store's rows.
  auto restarted = Service();
  ASSERT_NE(restarted, nullptr);
  auto listed = restarted->ReceiptKeys();
  ASSERT_TRUE(listed.ok());
  EXPECT_TRUE(VerifyReceipt(listed->json, receipt->jws).ok());
  // Receipts signed now use the new key.
  auto next = restarted->SignShredReceipt(AcmeShred(Now()));
  ASSERT_TRUE(next.ok());
  EXPECT_EQ(next->kid, rotation->new_kid);
  EXPECT_TRUE(VerifyReceipt(listed->json, next->jws).ok());
}

TEST_F(JwtServiceTest, NoReceiptIsSignedOrListedBeforeLoad) {
  auto s = Service(Options(), /*load=*/false);
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(s->SignShredReceipt(AcmeShred(Now())).status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(s->ReceiptKeys().status().code(), StatusCode::kUnavailable);
}

TEST(JwtOptionsTest, EnvironmentOverridesApply) {
  std::map<std::string, std::string> env = {{"KEY_MAX_AGE", "1000"},
                                            {"VAULT_ROTATION_PERIOD", "200000"},
                                            {"JWT_ACCESS_TOKEN_TTL", "600"}};
  auto getenv = [&](const char* name) -> const char* {
    auto it = env.find(name);
    return it == env.end() ? nullptr : it->second.c_str();
  };
  JwtServiceOptions o;
  ASSERT_OK(ApplyEnvironmentOverrides(o, getenv));
  EXPECT_EQ(o.key_max_age_seconds, 1000);
  EXPECT_EQ(o.rotation_period_seconds, 200000);
  EXPECT_EQ(o.max_ttl_seconds, 600);
  env["KMS_ROTATION_PERIOD"] = "300000";  // the new name wins
  ASSERT_OK(ApplyEnvironmentOverrides(o, getenv));
  EXPECT_EQ(o.rotation_period_seconds, 300000);
  EXPECT_TRUE(ValidateOptions(o).ok());
  // The same variables set the scheduled KEK and DEK rotation periods.
  auto period = RotationPeriodFromEnvironment(getenv);
  ASSERT_TRUE(period.ok()) << period.status();
  EXPECT_EQ(*period, 300000);
  env.erase("KMS_ROTATION_PERIOD");
  EXPECT_EQ(*RotationPeriodFromEnvironment(getenv), 200000);
  env.erase("VAULT_ROTATION_PERIOD");
  EXPECT_EQ(*RotationPeriodFromEnvironment(getenv), 0);
  env["KMS_ROTATION_PERIOD"] = "90d";
  EXPECT_EQ(RotationPeriodFromEnvironment(getenv).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(JwtOptionsTest, InvalidEnvironmentValuesNameTheVariable) {
  for (const char* var :
       {"KEY_MAX_AGE", "VAULT_ROTATION_PERIOD", "KMS_ROTATION_PERIOD", "JWT_ACCESS_TOKEN_TTL"}) {
    for (const char* value : {"abc", "-5", "0", "12s", " 7", "99999999999999999999"}) {
      auto getenv = [&](const char* name) -> const char* {
        return std::string_view(name) == var ? value : nullptr;
      };
      JwtServiceOptions o;
      absl::Status st = ApplyEnvironmentOverrides(o, getenv);
      EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << var << "=" << value;
      EXPECT_NE(std::string(st.message()).find(var), std::string::npos) << st;
    }
  }
  JwtServiceOptions o;
  ASSERT_OK(ApplyEnvironmentOverrides(o, [](const char*) -> const char* { return ""; }));
  EXPECT_EQ(o.max_ttl_seconds, 900);  // empty: unset
}

TEST(JwtOptionsTest, TheProcessEnvironmentIsRead) {
  ::setenv("JWT_ACCESS_TOKEN_TTL", "300", 1);
  JwtServiceOptions o;
  absl::Status st = ApplyEnvironmentOverrides(o);
  ::unsetenv("JWT_ACCESS_TOKEN_TTL");
  ASSERT_OK(st);
  EXPECT_EQ(o.max_ttl_seconds, 300);
}

TEST(JwtOptionsTest, OutOfRangeOptionsAreRefusedAtCreate) {
  auto bad = [](auto edit) {
    JwtServiceOptions o;
    edit(o);
    return ValidateOptions(o).code();
  };
  EXPECT_EQ(bad([](JwtServiceOptions&) {}), StatusCode::kOk);
  EXPECT_EQ(bad([](JwtServiceOptions& o) { o.max_ttl_seconds = 0; }),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(bad([](JwtServiceOptions& o) { o.clock_skew_seconds = -1; }),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(bad([](JwtServiceOptions& o) { o.jwks_cache_seconds = 0; }),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(bad([](JwtServiceOptions& o) { o.rotation_period_seconds = 1000; }),
            StatusCode::kInvalidArgument);  // shorter than pre-publish + overlap
  EXPECT_EQ(bad([](JwtServiceOptions& o) { o.key_max_age_seconds = 0; }),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(bad([](JwtServiceOptions& o) { o.max_claims_bytes = 1 << 20; }),
            StatusCode::kInvalidArgument);
  kms::testing::FakeKekRing ring;
  SimulatedClock clock;
  JwtServiceOptions o;
  o.max_ttl_seconds = 0;
  EXPECT_EQ(JwtService::Create(&ring, nullptr, nullptr, &clock, o).status().code(),
            StatusCode::kInvalidArgument);
}

// --- Threads

TEST_F(JwtServiceTest, SigningAndVerifyingRunConcurrentlyWithRotationAndTicks) {
  JwtServiceOptions o = Options();
  o.rotation_period_seconds = 2000;
  auto s = Service(o);
  ASSERT_NE(s, nullptr);
  std::atomic<bool> stop{false};
  std::atomic<int> failures{0}, signed_count{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < 3; ++i) {
    threads.emplace_back([&] {
      while (!stop) {
        auto t = s->Sign("{}", 300);
        if (!t.ok()) {
          ADD_FAILURE() << t.status();
          ++failures;
        } else if (auto v = s->Verify(t->jwt); !v.ok() && Now() < t->expires_at) {
          // (The main thread moves the clock meanwhile: only a token still within its
          // lifetime must verify.)
          ADD_FAILURE() << v.status();
          ++failures;
        }
        ++signed_count;
      }
    });
  }
  for (int i = 0; i < 300; ++i) {
    // Let the signers work at every simulated moment.
    const int before = signed_count.load();
    while (signed_count.load() < before + 6) std::this_thread::yield();
    Advance(30);
    absl::Status st = s->Tick();
    if (!st.ok()) {
      ADD_FAILURE() << st;
      ++failures;
    }
  }
  stop = true;
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_GT(signed_count.load(), 0);
  EXPECT_GE(StoredKeys(), 4u);  // 9000 s at a 2000 s period
}

}  // namespace
}  // namespace kms::jwt

namespace kms::jwt {
namespace {

// Replica B has only KEK 7 loaded; replica A seals a new signing key under KEK 8. B's
// next load must open it through its KEK ring (which loads KEK 8 from the shared table)
// instead of going Degraded.
TEST_F(JwtServiceTest, AKeySealedUnderAKekThisReplicaHasNotLoadedIsOpenedThroughTheRing) {
  kms::testing::FakeKekRing ring_a(std::make_shared<kms::testing::FakeKekRing::Table>());
  ASSERT_OK(ring_a.CreateKek(7));  // the KEK both replicas share
  kms::testing::FakeKekRing ring_b(ring_a.table());
  ASSERT_OK(ring_b.EnsureLoaded(7));
  ring_b.set_primary(7);
  auto a = JwtService::Create(&ring_a, store_.get(), store_.get(), &clock_, Options());
  ASSERT_TRUE(a.ok());
  ASSERT_OK((*a)->Load());

  ASSERT_OK(ring_a.CreateKek(8));  // a KEK rotation on replica A
  ASSERT_TRUE((*a)->Rotate().ok());  // the next key is sealed under KEK 8

  const uint64_t loads_before = ring_b.loads();
  auto b = JwtService::Create(&ring_b, store_.get(), store_.get(), &clock_, Options());
  ASSERT_TRUE(b.ok());
  ASSERT_OK((*b)->Load());
  EXPECT_TRUE(ring_b.hsm().HasKek(8));
  EXPECT_EQ(ring_b.loads() - loads_before, 1u);
  EXPECT_EQ((*b)->Status().keys.size(), 2u);

  // A ring that cannot find KEK 8 cannot open the new key.
  kms::testing::FakeKekRing ring_c(ring_a.table());
  ASSERT_OK(ring_c.EnsureLoaded(7));
  ring_c.set_primary(7);
  ring_c.set_loads_from_table(false);
  auto c = JwtService::Create(&ring_c, store_.get(), store_.get(), &clock_, Options());
  ASSERT_TRUE(c.ok());
  EXPECT_FALSE((*c)->Load().ok());
}

// --- The KEK ring seam, asserted with a mock

// Matches an AAD that JwtKeyAad made for KEK `version` (the label first, the version
// last), whatever the kid.
MATCHER_P(JwtAadFor, version, "") {
  const std::vector<uint8_t> label = JwtKeyAad("", version);  // label, len 0, version
  std::span<const uint8_t> aad = arg;
  return aad.size() > label.size() &&
         std::equal(label.begin(), label.begin() + 11, aad.begin()) &&
         std::equal(label.end() - 4, label.end(), aad.end() - 4);
}

TEST(JwtServiceKekRingTest, NewSigningKeysAreSealedUnderTheRingsPrimaryVersion) {
  using ::testing::_;
  using ::testing::AnyNumber;
  kms::testing::FakeKekRing fake;
  ASSERT_OK(fake.CreateKek(1));
  ASSERT_OK(fake.CreateKek(2));
  ASSERT_OK(fake.CreateKek(3));
  fake.set_primary(2);  // the ring says which version is primary, not the newest one
  ::testing::StrictMock<kms::testing::MockKekRing> ring;
  ring.DelegateTo(&fake);
  auto sqlite = store::SqliteKeyStore::Open(":memory:");
  ASSERT_TRUE(sqlite.ok()) << sqlite.status();
  SimulatedClock clock;
  JwtServiceOptions options;
  options.issuer = "https://iam.example";
  auto service = JwtService::Create(&ring, sqlite->get(), sqlite->get(), &clock, options);
  ASSERT_TRUE(service.ok()) << service.status();

  EXPECT_CALL(ring, primary_version()).Times(AnyNumber());
  EXPECT_CALL(ring, Ping()).Times(AnyNumber());
  EXPECT_CALL(ring, Seal(2, _, JwtAadFor(2u))).Times(1);  // the very first key, on Load
  ASSERT_OK((*service)->Load());
  ASSERT_TRUE(::testing::Mock::VerifyAndClearExpectations(&ring));

  fake.set_primary(3);  // a KEK rotation: the next key goes under version 3
  EXPECT_CALL(ring, primary_version()).Times(AnyNumber());
  EXPECT_CALL(ring, Ping()).Times(AnyNumber());
  EXPECT_CALL(ring, Seal(3, _, JwtAadFor(3u))).Times(1);
  ASSERT_TRUE((*service)->Rotate().ok());
  ASSERT_TRUE(::testing::Mock::VerifyAndClearExpectations(&ring));

  // The rows say so, and each blob opens under its version with its own kid in the AAD.
  auto rows = (*sqlite)->ListJwtKeys();
  ASSERT_TRUE(rows.ok()) << rows.status();
  ASSERT_EQ(rows->size(), 2u);
  EXPECT_EQ((*rows)[0].kek_version, 2u);
  EXPECT_EQ((*rows)[1].kek_version, 3u);
  for (const auto& row : *rows) {
    EXPECT_TRUE(fake.Open(row.kek_version, row.wrapped_private,
                          JwtKeyAad(row.kid, row.kek_version)).ok()) << row.kid;
  }
}

}  // namespace
}  // namespace kms::jwt
