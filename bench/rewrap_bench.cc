// rewrap_bench: the KEK re-wrap job's speed on SoftHSM2, and what it costs Encrypt.
// A measurement tool, not a test (docs/benchmarks.md has the figures and the command).
//
//   rewrap_bench [--deks N] [--backend sqlite|postgres] [--encrypt-threads T]
//                [--throttle R] [--parallelism 1,2,4] [--batch B] [--rate-only]
//
// 1. Re-wrap rate: N tenants (one DEK each) are loaded under KEK 1 into a fresh store
//    (SQLite file with synchronous=FULL as kmsd runs it, or PostgreSQL from
//    KMS_TEST_PG_CONNINFO / KMS_TEST_PG_PASSWORD_FILE in a schema of its own), then a KEK
//    rotation and the re-wrap job run unthrottled through RotationService, as in kmsd;
//    DEKs/s = N / wall time of the job, once per parallelism.
// 2. Encrypt latency: T threads call KeyManager::Encrypt (in process: DEK cached, no
//    gRPC) on 200 tenants for a fixed time, first alone (the baseline), then while a
//    re-wrap job runs at the throttle R (default: the configured default); p50/p99 of
//    each and their ratio.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "src/config/config.h"
#include "src/hsm/pkcs11_hsm.h"
#include "src/jwt/jwt_service.h"
#include "src/keys/kek_ring.h"
#include "src/keys/key_manager.h"
#include "src/sched/rotation.h"
#include "src/store/postgres/postgres_key_store.h"
#include "src/store/sqlite/sqlite_key_store.h"
#include "tests/test_common/softhsm_token.h"
#include "tests/test_common/temp_dir.h"

namespace kms {
namespace {

using Clock = std::chrono::steady_clock;

struct Args {
  int deks = 20000;
  std::string backend = "sqlite";
  int encrypt_threads = 2;
  int64_t throttle = config::RotationConfig{}.rewrap_rate_per_second;
  std::vector<int> parallelism = {1, 2, 4};
  double encrypt_seconds = 4;
  int batch = sched::RotationOptions{}.rewrap_batch_size;
  bool skip_latency = false;
};

[[noreturn]] void Die(const std::string& what, const absl::Status& st) {
  std::fprintf(stderr, "rewrap_bench: %s: %s\n", what.c_str(), st.ToString().c_str());
  std::exit(1);
}

template <typename T>
T Must(absl::StatusOr<T> v, const std::string& what) {
  if (!v.ok()) Die(what, v.status());
  return std::move(*v);
}

struct Rig {
  std::unique_ptr<store::KeyStore> store;
  std::unique_ptr<hsm::Pkcs11Hsm> hsm;
  std::unique_ptr<keys::HsmKekRing> ring;
  std::unique_ptr<keys::KeyManager> keys;
  std::unique_ptr<jwt::JwtService> jwt;
};

std::string g_pg_schema;  // the schema of the current round (PostgreSQL)

std::unique_ptr<store::KeyStore> OpenStore(const Args& a, const test::TempDir& dir, int round,
                                           bool durable) {
  if (a.backend == "postgres") {
    const char* conninfo = std::getenv("KMS_TEST_PG_CONNINFO");
    const char* pw = std::getenv("KMS_TEST_PG_PASSWORD_FILE");
    if (conninfo == nullptr || pw == nullptr) {
      Die("postgres", absl::FailedPreconditionError("set KMS_TEST_PG_CONNINFO and KMS_TEST_PG_PASSWORD_FILE"));
    }
    if (durable) {
      std::mt19937_64 rng(std::random_device{}());
      g_pg_schema = absl::StrCat("rewrap_bench_", rng() % 1000000000);
    }
    store::PostgresOptions o{.conninfo = conninfo, .password_file = pw, .schema = g_pg_schema};
    return Must<std::unique_ptr<store::KeyStore>>(store::PostgresKeyStore::Open(o), "postgres");
  }
  store::SqliteKeyStore::Options o;
  o.durable = durable;
  return Must<std::unique_ptr<store::KeyStore>>(
      store::SqliteKeyStore::Open(dir.Join(absl::StrCat("bench-", round, ".db")), o), "sqlite");
}

// Loads `tenants` tenants under KEK 1 (SQLite: with synchronous=OFF, only to load fast),
// then opens the store again as kmsd runs it (SQLite: synchronous=FULL) for the job.
Rig MakeRig(const Args& a, const test::SoftHsmToken& token, const test::TempDir& dir, int round,
            int tenants) {
  Rig r;
  r.hsm = Must(hsm::Pkcs11Hsm::Open(token.Options(hsm::MasterKeyKind::kRsa4096)), "hsm");
  r.store = OpenStore(a, dir, round, /*durable=*/true);
  {
    std::unique_ptr<store::KeyStore> bulk =
        a.backend == "postgres" ? nullptr : OpenStore(a, dir, round, /*durable=*/false);
    store::KeyStore* load = bulk ? bulk.get() : r.store.get();
    auto ring = Must(keys::HsmKekRing::Create(r.hsm.get(), load, &RealClock::Instance()), "ring");
    auto keys = Must(keys::KeyManager::Create(ring.get(), load, &RealClock::Instance(), {}), "keys");
    const auto start = Clock::now();
    for (int i = 0; i < tenants; ++i) {
      Must(keys->CreateTenant(Must(keys::TenantId::Parse(absl::StrCat("t", 1000000 + i)), "id")),
           "tenant");
    }
    std::fprintf(stderr, "loaded %d tenants in %.1f s\n", tenants,
                 std::chrono::duration<double>(Clock::now() - start).count());
  }
  r.ring = Must(keys::HsmKekRing::Create(r.hsm.get(), r.store.get(), &RealClock::Instance()), "ring");
  r.keys = Must(keys::KeyManager::Create(r.ring.get(), r.store.get(), &RealClock::Instance(), {}), "keys");
  jwt::JwtServiceOptions jo;
  r.jwt = Must(jwt::JwtService::Create(r.ring.get(), r.store.get(), r.store.get(), &RealClock::Instance(), jo),
               "jwt");
  if (absl::Status st = r.jwt->Load(); !st.ok()) Die("jwt load", st);
  return r;
}

std::unique_ptr<sched::RotationService> Service(Rig& r, int parallelism, int64_t rate, int batch) {
  sched::RotationOptions o;
  o.rewrap_batch_size = batch;
  o.rewrap_rate_per_second = rate;
  o.rewrap_parallelism = parallelism;
  o.rewrap_slice = std::chrono::hours(1);
  o.retire_grace = std::chrono::seconds(0);
  std::vector<std::unique_ptr<sched::RewrapTarget>> targets;
  targets.push_back(std::make_unique<sched::DekRewrapTarget>(r.ring.get(), r.store.get(),
                                                             r.store.get(), parallelism));
  targets.push_back(std::make_unique<sched::JwtRewrapTarget>(r.jwt.get(), r.store.get()));
  return std::make_unique<sched::RotationService>(RealClock::Instance(), *r.store, *r.ring, *r.keys,
                                                  r.jwt.get(), std::move(targets), o);
}

// Runs one whole job; returns its wall time in seconds.
double RunJob(sched::RotationService& s) {
  const auto start = Clock::now();
  auto job = Must(s.StartKekRotation(), "rotate");
  while (true) {
    if (absl::Status st = s.RunRewrap(); !st.ok()) Die("rewrap", st);
    if (Must(s.GetJob(job.id), "job").state != store::RotationJobState::kRunning) break;
  }
  return std::chrono::duration<double>(Clock::now() - start).count();
}

struct Latency {
  double p50_us = 0, p99_us = 0;
  size_t n = 0;
};

Latency EncryptLoad(keys::KeyManager& keys, int threads, double seconds,
                    const std::atomic<bool>* stop_early) {
  std::vector<std::vector<double>> samples(threads);
  std::atomic<bool> stop{false};
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      const std::string plaintext = "alice@example.com";
      for (int i = 0; !stop; ++i) {
        auto id = keys::TenantId::Parse(absl::StrCat("t", 1000000 + (i * 7 + t) % 200)).value();
        const auto s = Clock::now();
        auto r = keys.Encrypt(id, {}, {reinterpret_cast<const uint8_t*>(plaintext.data()), plaintext.size()});
        samples[t].push_back(std::chrono::duration<double, std::micro>(Clock::now() - s).count());
        if (!r.ok()) Die("encrypt", r.status());
      }
    });
  }
  const auto start = Clock::now();
  while (std::chrono::duration<double>(Clock::now() - start).count() < seconds &&
         !(stop_early != nullptr && stop_early->load())) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  stop = true;
  for (auto& w : workers) w.join();
  std::vector<double> all;
  for (auto& s : samples) all.insert(all.end(), s.begin(), s.end());
  std::sort(all.begin(), all.end());
  Latency l;
  l.n = all.size();
  if (!all.empty()) {
    l.p50_us = all[all.size() / 2];
    l.p99_us = all[std::min(all.size() - 1, all.size() * 99 / 100)];
  }
  return l;
}

int Main(const Args& a) {
  auto token = Must(test::SoftHsmToken::Create("rewrap-bench"), "token");
  test::TempDir dir("kmsd-rewrap-bench-");
  int round = 0;

  std::printf("re-wrap rate, %s + SoftHSM2, %d DEKs, unthrottled\n", a.backend.c_str(), a.deks);
  for (int p : a.parallelism) {
    Rig rig = MakeRig(a, *token, dir, ++round, a.deks);
    auto service = Service(rig, p, 0, a.batch);
    const double secs = RunJob(*service);
    std::printf("  parallelism %d: %.2f s, %.0f DEKs/s\n", p, secs, a.deks / secs);
  }

  if (a.skip_latency) return 0;
  std::printf("Encrypt latency (in process, %d threads, DEKs cached), %s\n", a.encrypt_threads,
              a.backend.c_str());
  Rig rig = MakeRig(a, *token, dir, ++round, a.deks);
  for (int w = 0; w < 3; ++w) EncryptLoad(*rig.keys, a.encrypt_threads, 0.3, nullptr);  // warm
  const Latency base = EncryptLoad(*rig.keys, a.encrypt_threads, a.encrypt_seconds, nullptr);
  auto service = Service(rig, config::RotationConfig{}.rewrap_parallelism, a.throttle, a.batch);
  std::atomic<bool> job_done{false};
  double job_secs = 0;
  std::thread job([&] {
    job_secs = RunJob(*service);
    job_done = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  const Latency during = EncryptLoad(*rig.keys, a.encrypt_threads, a.encrypt_seconds, &job_done);
  job.join();
  std::printf("  without re-wrap: p50 %.1f us, p99 %.1f us (%zu calls)\n", base.p50_us, base.p99_us, base.n);
  std::printf("  during re-wrap at %lld keys/s: p50 %.1f us, p99 %.1f us (%zu calls)\n",
              static_cast<long long>(a.throttle), during.p50_us, during.p99_us, during.n);
  std::printf("  p99 ratio: %.2f (job took %.1f s for %d DEKs)\n", during.p99_us / base.p99_us, job_secs,
              a.deks);
  return 0;
}

}  // namespace
}  // namespace kms

int main(int argc, char** argv) {
  kms::Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", arg.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (arg == "--deks") {
      a.deks = std::stoi(next());
    } else if (arg == "--backend") {
      a.backend = next();
    } else if (arg == "--encrypt-threads") {
      a.encrypt_threads = std::stoi(next());
    } else if (arg == "--throttle") {
      a.throttle = std::stoll(next());
    } else if (arg == "--batch") {
      a.batch = std::stoi(next());
    } else if (arg == "--rate-only") {
      a.skip_latency = true;
    } else if (arg == "--encrypt-seconds") {
      a.encrypt_seconds = std::stod(next());
    } else if (arg == "--parallelism") {
      a.parallelism.clear();
      const std::string list = next();
      for (size_t pos = 0; pos < list.size();) {
        size_t comma = list.find(',', pos);
        if (comma == std::string::npos) comma = list.size();
        a.parallelism.push_back(std::stoi(list.substr(pos, comma - pos)));
        pos = comma + 1;
      }
    } else {
      std::fprintf(stderr,
                   "usage: rewrap_bench [--deks N] [--backend sqlite|postgres] [--encrypt-threads T] "
                   "[--encrypt-seconds S] [--throttle R] [--parallelism 1,2,4] [--batch B] [--rate-only]\n");
      return 2;
    }
  }
  return kms::Main(a);
}
