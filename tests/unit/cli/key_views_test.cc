#include "src/cli/key_views.h"

#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <iterator>

#include "gtest/gtest.h"
#include "tests/test_common/temp_dir.h"

namespace kms::cli {
namespace {

std::string Slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

TEST(Rfc3339Test, FormatsUtcWithSeconds) {
  EXPECT_EQ(Rfc3339(1), "1970-01-01T00:00:01Z");
  EXPECT_EQ(Rfc3339(1714564800), "2024-05-01T12:00:00Z");
  EXPECT_EQ(Rfc3339(951782400), "2000-02-29T00:00:00Z");  // a leap day
  EXPECT_EQ(Rfc3339(0), "-");
}

TEST(AgeTest, ShowsTheTwoLargestUnits) {
  EXPECT_EQ(Age(0), "0s");
  EXPECT_EQ(Age(42), "42s");
  EXPECT_EQ(Age(5 * 60 + 3), "5m 3s");
  EXPECT_EQ(Age(4 * 3600 + 12 * 60 + 9), "4h 12m");
  EXPECT_EQ(Age(3 * 86400 + 4 * 3600 + 59), "3d 4h");
  EXPECT_EQ(Age(-5), "0s");
}

v1::ListKeysResponse Sample() {
  v1::ListKeysResponse resp;
  v1::KekKeyInfo* k1 = resp.add_keks();
  k1->set_version(1);
  k1->set_state("active");
  k1->set_created_at_unix(1714564800);
  k1->set_age_seconds(2 * 86400);
  k1->set_wrap_mechanism("rsa-oaep-sha1");
  k1->set_deks_wrapped(3);
  k1->set_jwt_keys_wrapped(1);
  v1::KekKeyInfo* k2 = resp.add_keks();
  k2->set_version(2);
  k2->set_state("active");
  k2->set_primary(true);
  k2->set_created_at_unix(1714737600);
  k2->set_age_seconds(30);
  k2->set_wrap_mechanism("rsa-oaep-sha1");
  v1::TenantKeys* t = resp.add_tenants();
  t->set_tenant_id("acme");
  v1::DekVersionInfo* d1 = t->add_dek_versions();
  d1->set_version(1);
  d1->set_state("retired");
  d1->set_created_at_unix(1714564800);
  d1->set_age_seconds(2 * 86400);
  d1->set_encryptions(17);
  d1->set_kek_version(1);
  v1::DekVersionInfo* d2 = t->add_dek_versions();
  d2->set_version(2);
  d2->set_state("active");
  d2->set_primary(true);
  d2->set_created_at_unix(1714737600);
  d2->set_age_seconds(30);
  d2->set_kek_version(2);
  resp.set_next_page_token("acme");
  return resp;
}

TEST(ListKeysViewTest, JsonCarriesUnixSecondsAndRfc3339) {
  const nlohmann::json j = ListKeysJson(Sample());
  ASSERT_EQ(j["keks"].size(), 2u);
  EXPECT_EQ(j["keks"][0]["created_at"], "2024-05-01T12:00:00Z");
  EXPECT_EQ(j["keks"][0]["created_at_unix"], 1714564800);
  EXPECT_EQ(j["keks"][0]["deks_wrapped"], 3);
  EXPECT_EQ(j["keks"][0]["jwt_keys_wrapped"], 1);
  EXPECT_EQ(j["keks"][1]["primary"], true);
  ASSERT_EQ(j["tenants"].size(), 1u);
  EXPECT_EQ(j["tenants"][0]["tenant_id"], "acme");
  EXPECT_EQ(j["tenants"][0]["dek_versions"][0]["state"], "retired");
  EXPECT_EQ(j["tenants"][0]["dek_versions"][0]["encryptions"], 17);
  EXPECT_EQ(j["tenants"][0]["dek_versions"][1]["primary"], true);
  EXPECT_EQ(j["next_page_token"], "acme");
  EXPECT_EQ(j["kek_rotation_due_in_seconds"], 0);
}

TEST(ListKeysViewTest, TextShowsTimesWithTheirAge) {
  const std::string text = ListKeysText(Sample());
  EXPECT_NE(text.find("v2 (primary)  active  created 2024-05-03T12:00:00Z (30s ago)"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("wraps 3 DEKs, 1 JWT keys"), std::string::npos) << text;
  EXPECT_NE(text.find("DEK v1  retired  created 2024-05-01T12:00:00Z (2d 0h ago)  17 encryptions  KEK v1"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("next page: --page-token acme"), std::string::npos);
  EXPECT_EQ(ListKeysText(Sample(), /*with_keks=*/false).find("KEK versions"), std::string::npos);
}

TEST(ReceiptFileTest, DefaultPathNamesTheTenant) {
  EXPECT_EQ(DefaultReceiptPath("acme"), "shred-receipt-acme.jws");
}

TEST(ReceiptFileTest, WritesANewFileAndNeverReplacesOne) {
  test::TempDir dir("kmsctl-views-");
  const std::string path = dir.Join("receipt.jws");
  ASSERT_TRUE(WriteNewFile(path, "first\n").ok());
  EXPECT_EQ(Slurp(path), "first\n");
  struct stat st {};
  ASSERT_EQ(stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0644u & ~static_cast<unsigned>(umask(022)));

  absl::Status again = WriteNewFile(path, "second\n");
  EXPECT_EQ(again.code(), absl::StatusCode::kAlreadyExists) << again;
  EXPECT_EQ(Slurp(path), "first\n");

  // Not through a link either, dangling or not.
  const std::string link = dir.Join("link.jws");
  ASSERT_EQ(symlink(dir.Join("elsewhere").c_str(), link.c_str()), 0);
  EXPECT_EQ(WriteNewFile(link, "x").code(), absl::StatusCode::kAlreadyExists);
  EXPECT_NE(access(dir.Join("elsewhere").c_str(), F_OK), 0);

  EXPECT_EQ(WriteNewFile(dir.Join("no-such-dir/r.jws"), "x").code(), absl::StatusCode::kInternal);
}

}  // namespace
}  // namespace kms::cli
