#include "src/keys/key_ref.h"

#include "gtest/gtest.h"

namespace kms::keys {
namespace {

using ::absl::StatusCode;

TEST(KeyRefTest, TenantAndNamedKeyLiveInDifferentNamespaces) {
  auto tenant = KeyRef::ForTenant("backup");
  auto named = KeyRef::ForNamedKey("backup");
  ASSERT_TRUE(tenant.ok() && named.ok());
  EXPECT_EQ(tenant->storage_id().str(), "backup");
  EXPECT_EQ(named->storage_id().str(), "key:backup");
  EXPECT_FALSE(*tenant == *named);
  EXPECT_FALSE(tenant->is_named_key());
  EXPECT_TRUE(named->is_named_key());
  EXPECT_EQ(named->name(), "backup");
  EXPECT_EQ(named->Describe(), "named key backup");
  EXPECT_EQ(tenant->IndexKeyId().str(), "bidx:backup");
  EXPECT_EQ(named->IndexKeyId().str(), "bidx:key:backup");
}

TEST(KeyRefTest, NoTenantIdCanNameAReservedRow) {
  for (const char* id : {"key:backup", "bidx:acme", "key", ":x", "a:b"}) {
    EXPECT_EQ(KeyRef::ForTenant(id).status().code() == StatusCode::kOk,
              std::string(id) == "key")
        << id;
  }
  EXPECT_FALSE(TenantId::Parse("key:backup").ok());
}

TEST(KeyRefTest, FromRequestWantsExactlyOneOfTenantAndKeyName) {
  EXPECT_EQ(KeyRef::FromRequest("", "").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(KeyRef::FromRequest("acme", "backup").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(KeyRef::FromRequest("acme", "")->storage_id().str(), "acme");
  EXPECT_EQ(KeyRef::FromRequest("", "backup")->storage_id().str(), "key:backup");
}

TEST(KeyRefTest, KeyNamesFollowTheTenantAlphabetUpToSixtyCharacters) {
  EXPECT_TRUE(KeyRef::ForNamedKey("clickhouse-disk").ok());
  EXPECT_TRUE(KeyRef::ForNamedKey(std::string(60, 'k')).ok());
  EXPECT_FALSE(KeyRef::ForNamedKey(std::string(61, 'k')).ok());
  for (const char* bad : {"", "-x", "a:b", "a/b", "a b", "ä"}) {
    EXPECT_EQ(KeyRef::ForNamedKey(bad).status().code(), StatusCode::kInvalidArgument) << bad;
  }
}

TEST(KeyRefTest, StoredIdsParseBackAndIndexIdsAreNoKeyRef) {
  EXPECT_EQ(KeyRef::FromStorageId("key:backup")->name(), "backup");
  EXPECT_EQ(KeyRef::FromStorageId("acme")->name(), "acme");
  EXPECT_FALSE(KeyRef::FromStorageId("bidx:acme").ok());
  EXPECT_FALSE(KeyRef::FromStorageId("key:").ok());
  EXPECT_TRUE(TenantId::ParseStored("bidx:acme").ok());
  EXPECT_TRUE(TenantId::ParseStored("bidx:key:backup").ok());
  EXPECT_TRUE(TenantId::ParseStored("key:backup").ok());
  EXPECT_FALSE(TenantId::ParseStored("bidx:bidx:acme").ok());
  EXPECT_FALSE(TenantId::ParseStored("other:acme").ok());
  EXPECT_TRUE(IsReservedStorageId("key:backup"));
  EXPECT_FALSE(IsReservedStorageId("acme"));
  EXPECT_TRUE(IsIndexKeyId("bidx:acme"));
  EXPECT_FALSE(IsIndexKeyId("key:backup"));
}

}  // namespace
}  // namespace kms::keys
