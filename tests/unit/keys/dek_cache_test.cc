#include "src/keys/dek_cache.h"

#include <latch>
#include <thread>

#include "gtest/gtest.h"
#include "tests/test_common/simulated_clock.h"

namespace kms::keys {
namespace {

using ::kms::testing::SimulatedClock;

using std::chrono::seconds;

std::shared_ptr<const DekEntry> MakeEntry(const Clock& clock, const std::string& tenant,
                                          uint32_t version) {
  auto e = std::make_shared<DekEntry>();
  e->tenant_id = tenant;
  e->version = version;
  e->key = crypto::AesGcmKey::Create(SecretBytes(32)).value();
  e->loaded_at = clock.Now();
  return e;
}

class DekCacheTest : public ::testing::Test {
 protected:
  DekCache::Loader CountingLoader(const std::string& tenant, uint32_t version) {
    return [this, tenant, version]() -> absl::StatusOr<std::shared_ptr<const DekEntry>> {
      ++loads_;
      return MakeEntry(clock_, tenant, version == 0 ? 7 : version);
    };
  }
  SimulatedClock clock_;
  std::atomic<int> loads_{0};
};

TEST_F(DekCacheTest, SecondLookupIsServedFromCache) {
  DekCache cache(clock_, {.ttl = seconds(3600)});
  ASSERT_TRUE(cache.GetOrLoad("t1", 1, CountingLoader("t1", 1)).ok());
  ASSERT_TRUE(cache.GetOrLoad("t1", 1, CountingLoader("t1", 1)).ok());
  EXPECT_EQ(loads_, 1);
  EXPECT_EQ(cache.size(), 1u);
}

TEST_F(DekCacheTest, PrimaryAliasAlsoCachesTheNumberedVersion) {
  DekCache cache(clock_, {});
  auto primary = cache.GetOrLoad("t1", 0, CountingLoader("t1", 0));
  ASSERT_TRUE(primary.ok());
  EXPECT_EQ((*primary)->version, 7u);
  auto numbered = cache.GetOrLoad("t1", 7, CountingLoader("t1", 7));
  ASSERT_TRUE(numbered.ok());
  EXPECT_EQ(numbered->get(), primary->get());
  EXPECT_EQ(loads_, 1);
}

TEST_F(DekCacheTest, ThePrimaryAliasFollowsAReplacedEntry) {
  // A load of version 7 and a load of the primary (also 7) race: the primary's lands
  // first (here: inside the version-7 loader), then version 7's replaces it. The alias
  // must name the entry the cache holds, or Encrypt keeps using (and counting on) an
  // entry no flush sees.
  DekCache cache(clock_, {});
  std::shared_ptr<const DekEntry> first;
  auto numbered = cache.GetOrLoad("t1", 7, [&]() -> absl::StatusOr<std::shared_ptr<const DekEntry>> {
    auto primary = cache.GetOrLoad("t1", 0, CountingLoader("t1", 0));
    if (!primary.ok()) return primary.status();
    first = *primary;
    return MakeEntry(clock_, "t1", 7);
  });
  ASSERT_TRUE(numbered.ok());
  ASSERT_NE(first, nullptr);
  ASSERT_NE(numbered->get(), first.get());
  auto primary = cache.GetOrLoad("t1", 0, []() -> absl::StatusOr<std::shared_ptr<const DekEntry>> {
    return absl::InternalError("the primary is cached: no load");
  });
  ASSERT_TRUE(primary.ok()) << primary.status();
  EXPECT_EQ(primary->get(), numbered->get());
  int seen = 0;
  cache.ForEach([&](const std::shared_ptr<const DekEntry>& e) {
    ++seen;
    EXPECT_EQ(e.get(), numbered->get());
  });
  EXPECT_EQ(seen, 1);
}

TEST_F(DekCacheTest, EntryIsReloadedAfterTheTtl) {
  DekCache cache(clock_, {.ttl = seconds(3600)});
  ASSERT_TRUE(cache.GetOrLoad("t1", 1, CountingLoader("t1", 1)).ok());
  clock_.Advance(seconds(3599));
  ASSERT_TRUE(cache.GetOrLoad("t1", 1, CountingLoader("t1", 1)).ok());
  EXPECT_EQ(loads_, 1);
  clock_.Advance(seconds(2));
  ASSERT_TRUE(cache.GetOrLoad("t1", 1, CountingLoader("t1", 1)).ok());
  EXPECT_EQ(loads_, 2);
}

TEST_F(DekCacheTest, ConcurrentMissesRunTheLoaderOnce) {
  DekCache cache(clock_, {});
  constexpr int kThreads = 64;
  std::latch start(kThreads);
  std::atomic<int> ok{0};
  DekCache::Loader slow = [this]() -> absl::StatusOr<std::shared_ptr<const DekEntry>> {
    ++loads_;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));  // hold the flight open
    return MakeEntry(clock_, "t1", 1);
  };
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&] {
      start.arrive_and_wait();
      if (cache.GetOrLoad("t1", 1, slow).ok()) ++ok;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok, kThreads);
  EXPECT_EQ(loads_, 1);
}

TEST_F(DekCacheTest, FailedLoadIsSharedAndNotCached) {
  DekCache cache(clock_, {});
  int calls = 0;
  auto failing = [&]() -> absl::StatusOr<std::shared_ptr<const DekEntry>> {
    ++calls;
    return absl::NotFoundError("tenant not found");
  };
  EXPECT_TRUE(absl::IsNotFound(cache.GetOrLoad("t1", 1, failing).status()));
  EXPECT_TRUE(absl::IsNotFound(cache.GetOrLoad("t1", 1, failing).status()));
  EXPECT_EQ(calls, 2);
  EXPECT_EQ(cache.size(), 0u);
}

TEST_F(DekCacheTest, ExpiredEntryIsServedWhileTheBackendIsDownUpToMaxStale) {
  DekCache cache(clock_, {.ttl = seconds(3600), .max_stale = seconds(7200)});
  ASSERT_TRUE(cache.GetOrLoad("t1", 1, CountingLoader("t1", 1)).ok());
  auto down = []() -> absl::StatusOr<std::shared_ptr<const DekEntry>> {
    return absl::UnavailableError("store down");
  };
  clock_.Advance(seconds(5000));
  EXPECT_TRUE(cache.GetOrLoad("t1", 1, down).ok());
  clock_.Advance(seconds(2201));
  EXPECT_TRUE(absl::IsUnavailable(cache.GetOrLoad("t1", 1, down).status()));
}

TEST_F(DekCacheTest, ExpiredEntryIsNotServedForOtherErrors) {
  DekCache cache(clock_, {.ttl = seconds(10)});
  ASSERT_TRUE(cache.GetOrLoad("t1", 1, CountingLoader("t1", 1)).ok());
  clock_.Advance(seconds(11));
  auto shredded = []() -> absl::StatusOr<std::shared_ptr<const DekEntry>> {
    return absl::FailedPreconditionError("shredded");
  };
  EXPECT_TRUE(absl::IsFailedPrecondition(cache.GetOrLoad("t1", 1, shredded).status()));
}

TEST_F(DekCacheTest, SizeIsBoundedAndOldestEntriesAreEvictedFirst) {
  DekCache cache(clock_, {.max_entries = 4, .shards = 1});
  for (uint32_t v = 1; v <= 6; ++v) {
    ASSERT_TRUE(cache.GetOrLoad("t1", v, CountingLoader("t1", v)).ok());
    clock_.Advance(seconds(1));
  }
  EXPECT_EQ(cache.size(), 4u);
  const int before = loads_;
  ASSERT_TRUE(cache.GetOrLoad("t1", 6, CountingLoader("t1", 6)).ok());  // newest: cached
  EXPECT_EQ(loads_, before);
  ASSERT_TRUE(cache.GetOrLoad("t1", 1, CountingLoader("t1", 1)).ok());  // oldest: evicted
  EXPECT_EQ(loads_, before + 1);
}

// Recency, not load time: the entry loaded first but used since is kept, and the one
// not used since its load is evicted (the old cache evicted by load time: "t1" here).
TEST_F(DekCacheTest, EvictionPicksTheLeastRecentlyUsedEntry) {
  DekCache cache(clock_, {.max_entries = 3, .shards = 1});
  for (const char* t : {"t1", "t2", "t3"}) {
    ASSERT_TRUE(cache.GetOrLoad(t, 1, CountingLoader(t, 1)).ok());
  }
  ASSERT_TRUE(cache.GetOrLoad("t1", 1, CountingLoader("t1", 1)).ok());  // t1 used: a hit
  ASSERT_TRUE(cache.GetOrLoad("t3", 1, CountingLoader("t3", 1)).ok());  // t3 used: a hit
  EXPECT_EQ(loads_, 3);
  ASSERT_TRUE(cache.GetOrLoad("t4", 1, CountingLoader("t4", 1)).ok());  // evicts one
  EXPECT_EQ(cache.size(), 3u);
  EXPECT_EQ(cache.stats().evictions, 1u);
  ASSERT_TRUE(cache.GetOrLoad("t1", 1, CountingLoader("t1", 1)).ok());
  ASSERT_TRUE(cache.GetOrLoad("t3", 1, CountingLoader("t3", 1)).ok());
  ASSERT_TRUE(cache.GetOrLoad("t4", 1, CountingLoader("t4", 1)).ok());
  EXPECT_EQ(loads_, 4);  // t1, t3 and t4 were still cached
  ASSERT_TRUE(cache.GetOrLoad("t2", 1, CountingLoader("t2", 1)).ok());
  EXPECT_EQ(loads_, 5);  // t2, the least recently used, was the one evicted
}

// A working set that fits the bound stays cached under a uniform load: every shard
// has room for its share however the hash spreads the tenants.
TEST_F(DekCacheTest, AWorkingSetOfMaxEntriesTenantsFitsAcrossShards) {
  DekCache cache(clock_, {.max_entries = 20000, .shards = 16});
  for (int i = 0; i < 20000; ++i) {
    const std::string t = "tenant-" + std::to_string(i);
    ASSERT_TRUE(cache.GetOrLoad(t, 1, CountingLoader(t, 1)).ok());
  }
  EXPECT_EQ(cache.size(), 20000u);
  EXPECT_EQ(cache.stats().evictions, 0u);
}

// Invalidated entries leave nodes in the recency ring; they are dropped, not kept.
TEST_F(DekCacheTest, ChurnOfInvalidationsDoesNotGrowTheCache) {
  DekCache cache(clock_, {.max_entries = 8, .shards = 1});
  for (int round = 0; round < 1000; ++round) {
    ASSERT_TRUE(cache.GetOrLoad("t1", 1, CountingLoader("t1", 1)).ok());
    cache.InvalidateTenant("t1");
  }
  for (int i = 0; i < 20; ++i) {
    const std::string t = "u" + std::to_string(i);
    ASSERT_TRUE(cache.GetOrLoad(t, 1, CountingLoader(t, 1)).ok());
  }
  EXPECT_EQ(cache.size(), 8u);
}

TEST_F(DekCacheTest, InvalidateTenantDropsEveryVersionOfThatTenantOnly) {
  DekCache cache(clock_, {});
  ASSERT_TRUE(cache.GetOrLoad("t1", 0, CountingLoader("t1", 0)).ok());
  ASSERT_TRUE(cache.GetOrLoad("t1", 2, CountingLoader("t1", 2)).ok());
  ASSERT_TRUE(cache.GetOrLoad("t2", 1, CountingLoader("t2", 1)).ok());
  cache.InvalidateTenant("t1");
  EXPECT_EQ(cache.size(), 1u);
  ASSERT_TRUE(cache.GetOrLoad("t1", 0, CountingLoader("t1", 0)).ok());
  EXPECT_EQ(loads_, 4);
}

TEST_F(DekCacheTest, AnEntryInUseSurvivesItsEviction) {
  DekCache cache(clock_, {});
  auto held = cache.GetOrLoad("t1", 1, CountingLoader("t1", 1));
  ASSERT_TRUE(held.ok());
  cache.Clear();
  std::vector<uint8_t> nonce(12), out(16);
  EXPECT_TRUE((*held)->key->Encrypt(nonce, {}, {}, out).ok());
}

}  // namespace
}  // namespace kms::keys

namespace kms::keys {
namespace {

TEST(DekCacheRaceTest, ALoadThatStartedBeforeAnInvalidationIsNotCached) {
  SimulatedClock clock;
  DekCache cache(clock, {});
  int loads = 0;
  auto loader = [&]() -> absl::StatusOr<std::shared_ptr<const DekEntry>> {
    ++loads;
    cache.InvalidateTenant("t1");  // a shred lands while the (old) key is being unwrapped
    return MakeEntry(clock, "t1", 1);
  };
  ASSERT_TRUE(cache.GetOrLoad("t1", 1, loader).ok());  // the caller still gets its answer
  EXPECT_EQ(cache.size(), 0u);                          // but it is not kept
  ASSERT_TRUE(cache.GetOrLoad("t1", 1, loader).ok());
  EXPECT_EQ(loads, 2);
}

TEST(DekCacheRaceTest, TheEntryJustInsertedIsNeverTheOneEvictedAndItsPrimaryAliasHolds) {
  SimulatedClock clock;
  DekCache cache(clock, {.max_entries = 1, .shards = 1});
  // An entry with a later load time than the one about to be inserted.
  auto newer = [&]() -> absl::StatusOr<std::shared_ptr<const DekEntry>> {
    auto e = MakeEntry(clock, "b", 1);
    const_cast<DekEntry&>(*e).loaded_at = clock.Now() + std::chrono::hours(1);
    return e;
  };
  ASSERT_TRUE(cache.GetOrLoad("b", 1, newer).ok());
  int loads = 0;
  auto primary = [&]() -> absl::StatusOr<std::shared_ptr<const DekEntry>> {
    ++loads;
    return MakeEntry(clock, "a", 3);
  };
  ASSERT_TRUE(cache.GetOrLoad("a", 0, primary).ok());
  EXPECT_EQ(cache.size(), 1u);
  ASSERT_TRUE(cache.GetOrLoad("a", 0, primary).ok());  // still cached through the alias
  EXPECT_EQ(loads, 1);
}

TEST(DekCacheRaceTest, EveryEntryLeavingTheCacheIsReported) {
  SimulatedClock clock;
  std::vector<std::string> removed;
  DekCache cache(clock, {.max_entries = 2,
                         .shards = 1,
                         .on_remove = [&](const std::shared_ptr<const DekEntry>& e) {
                           removed.push_back(e->tenant_id + "/" + std::to_string(e->version));
                         }});
  auto load = [&](const std::string& t, uint32_t v) {
    return cache.GetOrLoad(t, v, [&]() -> absl::StatusOr<std::shared_ptr<const DekEntry>> {
      return MakeEntry(clock, t, v);
    });
  };
  ASSERT_TRUE(load("a", 1).ok());
  clock.Advance(std::chrono::seconds(1));
  ASSERT_TRUE(load("b", 1).ok());
  clock.Advance(std::chrono::seconds(1));
  ASSERT_TRUE(load("c", 1).ok());  // evicts a/1
  cache.InvalidateTenant("b");     // b/1
  cache.Clear();                   // c/1
  EXPECT_EQ(removed, (std::vector<std::string>{"a/1", "b/1", "c/1"}));
}


// Issue 9: a cache-wide flush while the store is down must not drop what cannot be
// reloaded. Clear() would empty the cache; MarkAllStale keeps the entries.
TEST_F(DekCacheTest, MarkAllStaleKeepsEntriesWhileTheBackendIsDown) {
  DekCache cache(clock_, {.ttl = seconds(3600), .max_stale = seconds(86400)});
  auto first = cache.GetOrLoad("t1", 0, CountingLoader("t1", 0));
  ASSERT_TRUE(first.ok());
  cache.MarkAllStale();
  EXPECT_EQ(cache.size(), 1u);
  int down_loads = 0;
  auto down = [&]() -> absl::StatusOr<std::shared_ptr<const DekEntry>> {
    ++down_loads;
    return absl::UnavailableError("store is down");
  };
  // Every use tries a reload (it may have changed) and, while it fails UNAVAILABLE,
  // is served the stale entry.
  for (int i = 0; i < 3; ++i) {
    auto served = cache.GetOrLoad("t1", 0, down);
    ASSERT_TRUE(served.ok()) << served.status();
    EXPECT_EQ(served->get(), first->get());
  }
  EXPECT_EQ(down_loads, 3);
  EXPECT_EQ(cache.stats().stale_served, 3u);
  // The backend back: one reload, then fresh hits again.
  auto reloaded = cache.GetOrLoad("t1", 0, CountingLoader("t1", 0));
  ASSERT_TRUE(reloaded.ok());
  EXPECT_NE(reloaded->get(), first->get());
  ASSERT_TRUE(cache.GetOrLoad("t1", 0, down).ok());
  EXPECT_EQ(down_loads, 3);  // a fresh hit: no load
  EXPECT_EQ(loads_, 2);
}

TEST_F(DekCacheTest, MarkAllStaleDropsAnEntryTheBackendSaysIsGone) {
  DekCache cache(clock_, {});
  ASSERT_TRUE(cache.GetOrLoad("t1", 1, CountingLoader("t1", 1)).ok());
  cache.MarkAllStale();
  auto shredded = [&]() -> absl::StatusOr<std::shared_ptr<const DekEntry>> {
    return absl::FailedPreconditionError("tenant has been shredded");
  };
  EXPECT_TRUE(absl::IsFailedPrecondition(cache.GetOrLoad("t1", 1, shredded).status()));
  EXPECT_EQ(cache.size(), 0u);
  // And it is not served stale afterwards, even while the backend is down.
  auto down = [&]() -> absl::StatusOr<std::shared_ptr<const DekEntry>> {
    return absl::UnavailableError("down");
  };
  EXPECT_TRUE(absl::IsUnavailable(cache.GetOrLoad("t1", 1, down).status()));
}

TEST_F(DekCacheTest, MarkAllStaleKeepsALoadInFlightOutOfTheCache) {
  DekCache cache(clock_, {});
  auto loader = [&]() -> absl::StatusOr<std::shared_ptr<const DekEntry>> {
    cache.MarkAllStale();  // the flush lands while this load runs
    return MakeEntry(clock_, "t1", 1);
  };
  ASSERT_TRUE(cache.GetOrLoad("t1", 1, loader).ok());
  EXPECT_EQ(cache.size(), 0u);
}

}  // namespace
}  // namespace kms::keys
