// Micro-benchmarks of the data path's crypto, each beside its baseline in the same run:
//   raw OpenSSL AES-256-GCM on a ready context   (the floor: what the cipher costs)
//   SealField / OpenField                        (kmsd's format: nonce, AAD, framing)
//   DekCache hit                                 (the lookup every request makes)
//   SignJwt's parts: BuildClaims (checks and JSON) and EncodeCompact (the P-256
//   signature and Base64url) beside Es256Sign alone (the floor: one signature)
// Read the ratios (SealField / RawEvpGcmEncrypt), not the absolute times: runs on a
// shared 2-core machine vary by tens of percent.
#include <openssl/evp.h>

#include <string>
#include <vector>

#include "benchmark/benchmark.h"
#include "kms/common/clock.h"
#include "src/crypto/aes_gcm.h"
#include "src/crypto/field_cipher.h"
#include "src/jwt/es256.h"
#include "src/jwt/jwt.h"
#include "src/keys/dek_cache.h"

namespace kms {
namespace {

const SecretBytes& Key() {
  static const SecretBytes key = SecretBytes::CopyOf(std::string(32, 'k'));
  return key;
}

void BM_RawEvpGcmEncrypt(benchmark::State& state) {
  const size_t n = static_cast<size_t>(state.range(0));
  EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
  EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), nullptr, Key().data(), nullptr);
  std::vector<uint8_t> in(n, 'p'), out(n + 16), iv(12, 1), aad(40, 'a');
  for (auto _ : state) {
    int len = 0;
    EVP_EncryptInit_ex(ctx, nullptr, nullptr, nullptr, iv.data());
    EVP_EncryptUpdate(ctx, nullptr, &len, aad.data(), static_cast<int>(aad.size()));
    EVP_EncryptUpdate(ctx, out.data(), &len, in.data(), static_cast<int>(n));
    EVP_EncryptFinal_ex(ctx, out.data() + len, &len);
    EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, 16, out.data() + n);
    benchmark::DoNotOptimize(out.data());
  }
  EVP_CIPHER_CTX_free(ctx);
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * n));
}

void BM_SealField(benchmark::State& state) {
  auto key = crypto::AesGcmKey::Create(Key()).value();
  std::string plaintext(static_cast<size_t>(state.range(0)), 'p'), out;
  std::vector<crypto::ContextPair> ctx = {{"table", "users"}, {"column", "email"}};
  for (auto _ : state) {
    auto aad = crypto::FieldAad("tenant-0001", 1, ctx).value();
    benchmark::DoNotOptimize(crypto::SealField(*key, 1, aad, {reinterpret_cast<const uint8_t*>(plaintext.data()),
                                                              plaintext.size()}, &out));
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * plaintext.size()));
}

void BM_OpenField(benchmark::State& state) {
  auto key = crypto::AesGcmKey::Create(Key()).value();
  std::string plaintext(static_cast<size_t>(state.range(0)), 'p'), sealed, out;
  std::vector<crypto::ContextPair> ctx = {{"table", "users"}, {"column", "email"}};
  auto aad = crypto::FieldAad("tenant-0001", 1, ctx).value();
  (void)crypto::SealField(*key, 1, aad, {reinterpret_cast<const uint8_t*>(plaintext.data()), plaintext.size()},
                          &sealed);
  auto view = crypto::ParseField({reinterpret_cast<const uint8_t*>(sealed.data()), sealed.size()}).value();
  for (auto _ : state) {
    auto aad2 = crypto::FieldAad("tenant-0001", view.dek_version, ctx).value();
    benchmark::DoNotOptimize(crypto::OpenField(*key, view, aad2, &out));
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * plaintext.size()));
}

void BM_DekCacheHit(benchmark::State& state) {
  RealClock& clock = RealClock::Instance();
  keys::DekCache cache(clock, {});
  auto loader = [&]() -> absl::StatusOr<std::shared_ptr<const keys::DekEntry>> {
    auto e = std::make_shared<keys::DekEntry>();
    e->tenant_id = "tenant-0001";
    e->version = 1;
    e->key = crypto::AesGcmKey::Create(Key()).value();
    e->loaded_at = clock.Now();
    return std::shared_ptr<const keys::DekEntry>(std::move(e));
  };
  const std::string tenant = "tenant-0001";
  (void)cache.GetOrLoad(tenant, 0, loader);
  for (auto _ : state) benchmark::DoNotOptimize(cache.GetOrLoad(tenant, 0, loader));
}

// Encrypt alternating between two keys on one thread: every call re-keys the thread's
// EVP context (what a request for another tenant costs since keys keep only their raw
// bytes; compare with BM_SealField, where the thread's context already holds the key).
void BM_SealFieldRekeyEveryCall(benchmark::State& state) {
  auto a = crypto::AesGcmKey::Create(Key()).value();
  auto b = crypto::AesGcmKey::Create(SecretBytes::CopyOf(std::string(32, 'j'))).value();
  std::string plaintext(static_cast<size_t>(state.range(0)), 'p'), out;
  std::vector<crypto::ContextPair> ctx = {{"table", "users"}, {"column", "email"}};
  bool flip = false;
  for (auto _ : state) {
    auto aad = crypto::FieldAad("tenant-0001", 1, ctx).value();
    flip = !flip;
    benchmark::DoNotOptimize(crypto::SealField(flip ? *a : *b, 1, aad,
                                               {reinterpret_cast<const uint8_t*>(plaintext.data()),
                                                plaintext.size()},
                                               &out));
  }
}

// DekCache hits over many cached tenants (uniform), the cache sized to hold them.
void BM_DekCacheHitManyTenants(benchmark::State& state) {
  RealClock& clock = RealClock::Instance();
  const int n = static_cast<int>(state.range(0));
  keys::DekCache cache(clock, {.max_entries = static_cast<size_t>(n)});
  std::vector<std::string> tenants;
  for (int i = 0; i < n; ++i) tenants.push_back("tenant-" + std::to_string(i));
  auto loader_for = [&](const std::string& t) {
    return [&clock, t]() -> absl::StatusOr<std::shared_ptr<const keys::DekEntry>> {
      auto e = std::make_shared<keys::DekEntry>();
      e->tenant_id = t;
      e->version = 1;
      e->key = crypto::AesGcmKey::Create(Key()).value();
      e->loaded_at = clock.Now();
      return std::shared_ptr<const keys::DekEntry>(std::move(e));
    };
  };
  for (const auto& t : tenants) (void)cache.GetOrLoad(t, 0, loader_for(t));
  uint64_t x = 88172645463325252ull;
  for (auto _ : state) {
    x ^= x << 13; x ^= x >> 7; x ^= x << 17;
    const std::string& t = tenants[x % tenants.size()];
    benchmark::DoNotOptimize(cache.GetOrLoad(t, 0, loader_for(t)));
  }
  state.counters["evictions"] = static_cast<double>(cache.stats().evictions);
}

// A SignJwt request's claims: a subject, a scope list, a tenant.
constexpr char kClaims[] =
    R"({"sub":"user-1234","scope":["orders:read","orders:write"],"tenant":"acme","aud":"api"})";

const jwt::Es256PrivateKey& SigningKey() {
  static const auto key = jwt::Es256PrivateKey::Generate();
  return **key;
}

void BM_Es256Sign(benchmark::State& state) {
  const std::string message(200, 'm');
  for (auto _ : state) {
    benchmark::DoNotOptimize(SigningKey().Sign(
        {reinterpret_cast<const uint8_t*>(message.data()), message.size()}));
  }
}

void BM_BuildClaims(benchmark::State& state) {
  jwt::ClaimsPolicy policy;
  policy.issuer = "https://kmsd.example";
  for (auto _ : state) {
    benchmark::DoNotOptimize(jwt::BuildClaims(kClaims, 300, 1700000000, policy));
  }
}

void BM_EncodeCompact(benchmark::State& state) {
  jwt::ClaimsPolicy policy;
  policy.issuer = "https://kmsd.example";
  const std::string payload = jwt::BuildClaims(kClaims, 300, 1700000000, policy)->payload_json;
  for (auto _ : state) benchmark::DoNotOptimize(jwt::EncodeCompact(SigningKey(), payload));
}

BENCHMARK(BM_RawEvpGcmEncrypt)->Arg(16)->Arg(1024)->Arg(16384);
BENCHMARK(BM_Es256Sign);
BENCHMARK(BM_BuildClaims);
BENCHMARK(BM_EncodeCompact);
BENCHMARK(BM_SealFieldRekeyEveryCall)->Arg(16)->Arg(1024);
BENCHMARK(BM_DekCacheHitManyTenants)->Arg(1000)->Arg(100000);
BENCHMARK(BM_SealField)->Arg(16)->Arg(1024)->Arg(16384);
BENCHMARK(BM_OpenField)->Arg(16)->Arg(1024)->Arg(16384);
BENCHMARK(BM_DekCacheHit)->Threads(1)->Threads(2);

}  // namespace
}  // namespace kms

BENCHMARK_MAIN();
