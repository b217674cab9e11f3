// End to end for issue 13 on one real kmsd (dev mode: SoftHSM2, SQLite, the dev CA)
// over mutual TLS 1.3: named keys managed like tenants; data keys that a tool other than
// kmsd (AES-256-GCM from Debian's python3-cryptography) uses; each data-key RPC its own
// policy operation.
#include <sys/stat.h>

#include <fstream>
#include <map>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kms/v1/admin_service.grpc.pb.h"
#include "kms/v1/key_service.grpc.pb.h"
#include "nlohmann/json.hpp"
#include "tests/e2e/e2e_support.h"
#include "tests/test_common/kmsd_process.h"
#include "tests/test_common/temp_dir.h"

namespace kms {
namespace {

using test::RunCommand;
using Json = nlohmann::json;
using Context = std::map<std::string, std::string>;

class DataKeysE2eTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new test::TempDir("kmsd-datakeys-e2e-");
    state_ = dir_->Join("state");
    const std::vector<std::string> args = {"--dev",         "--state-dir", state_, "--grpc-listen",
                                           "127.0.0.1:0",   "--http-listen", ""};
    {
      auto dev = test::KmsdProcess::Start(KMSD_BINARY, args, dir_->Join("dev.log"));
      ASSERT_TRUE(dev.ok()) << dev.status();
      ASSERT_EQ((*dev)->Stop(), 0);
    }
    // A backup job that may make data keys under key:backup only, a restore job that
    // may unwrap them, and a search service that may compute blind indexes only.
    for (const char* client : {"backup", "restore", "search"}) {
      ASSERT_EQ(RunCommand(absl::StrCat(KMSD_BINARY, " --dev --state-dir ", state_,
                                        " --issue-client-cert ", client))
                    .exit_code,
                0);
    }
    Json policy = Json::parse(test::ReadFileOrEmpty(state_ + "/policy.json"));
    policy["identities"].push_back({{"identity", "spiffe://kmsd.dev/backup"},
                                    {"operations", {"generate_data_key",
                                                    "generate_data_key_without_plaintext"}},
                                    {"tenants", {"key:backup"}}});
    policy["identities"].push_back({{"identity", "spiffe://kmsd.dev/restore"},
                                    {"operations", {"decrypt_data_key"}},
                                    {"tenants", {"key:*"}}});
    policy["identities"].push_back({{"identity", "spiffe://kmsd.dev/search"},
                                    {"operations", {"compute_blind_index"}},
                                    {"tenants", {"*"}}});
    std::ofstream(state_ + "/policy.json") << policy.dump(2);
    auto p = test::KmsdProcess::Start(KMSD_BINARY, args, dir_->Join("kmsd.log"));
    ASSERT_TRUE(p.ok()) << p.status();
    kmsd_ = p->release();
  }
  static void TearDownTestSuite() {
    delete kmsd_;
    kmsd_ = nullptr;
    delete dir_;
  }

  static std::unique_ptr<v1::KeyService::Stub> Keys(const std::string& client) {
    return v1::KeyService::NewStub(e2e::DevChannel(state_, kmsd_->grpc_addr(), client));
  }
  static std::unique_ptr<v1::AdminService::Stub> Admin() {
    return v1::AdminService::NewStub(e2e::DevChannel(state_, kmsd_->grpc_addr(), "operator"));
  }
  static std::string Kmsctl(const std::string& args) { return e2e::KmsctlCommand(state_, args); }

  static void CreateNamedKey(const std::string& name) {
    grpc::ClientContext ctx;
    e2e::Deadline(ctx);
    v1::CreateTenantRequest req;
    req.set_key_name(name);
    v1::CreateTenantResponse resp;
    grpc::Status s = Admin()->CreateTenant(&ctx, req, &resp);
    ASSERT_TRUE(s.ok() || s.error_code() == grpc::StatusCode::ALREADY_EXISTS) << s.error_message();
  }
  static void CreateTenant(const std::string& id) {
    grpc::ClientContext ctx;
    e2e::Deadline(ctx);
    v1::CreateTenantRequest req;
    req.set_tenant_id(id);
    v1::CreateTenantResponse resp;
    grpc::Status s = Admin()->CreateTenant(&ctx, req, &resp);
    ASSERT_TRUE(s.ok() || s.error_code() == grpc::StatusCode::ALREADY_EXISTS) << s.error_message();
  }

  static grpc::Status Generate(const std::string& client, const std::string& tenant,
                               const std::string& key_name, const Context& context,
                               v1::GenerateDataKeyResponse* resp) {
    grpc::ClientContext ctx;
    e2e::Deadline(ctx);
    v1::GenerateDataKeyRequest req;
    req.set_tenant_id(tenant);
    req.set_key_name(key_name);
    for (const auto& [k, v] : context) (*req.mutable_context())[k] = v;
    return Keys(client)->GenerateDataKey(&ctx, req, resp);
  }
  static grpc::Status Unwrap(const std::string& client, const std::string& tenant,
                             const std::string& key_name, const std::string& wrapped,
                             const Context& context, v1::DecryptDataKeyResponse* resp) {
    grpc::ClientContext ctx;
    e2e::Deadline(ctx);
    v1::DecryptDataKeyRequest req;
    req.set_tenant_id(tenant);
    req.set_key_name(key_name);
    req.set_wrapped_key(wrapped);
    for (const auto& [k, v] : context) (*req.mutable_context())[k] = v;
    return Keys(client)->DecryptDataKey(&ctx, req, resp);
  }

  // A file of mode 0600 in the test's directory.
  static std::string WritePrivate(const std::string& name, const std::string& bytes) {
    return dir_->Write(name, bytes, 0600);
  }

  static test::TempDir* dir_;
  static std::string state_;
  static test::KmsdProcess* kmsd_;
};

test::TempDir* DataKeysE2eTest::dir_ = nullptr;
std::string DataKeysE2eTest::state_;
test::KmsdProcess* DataKeysE2eTest::kmsd_ = nullptr;

constexpr char kPython[] = "/usr/bin/python3 " KMS_DATAKEYS_DIR "/aes_gcm_file.py";

TEST_F(DataKeysE2eTest, NamedKeysAreManagedLikeTenantsAndNeverCollideWithThem) {
  auto created = RunCommand(Kmsctl("key create backup -o json"));
  ASSERT_EQ(created.exit_code, 0) << created.out;
  Json key = Json::parse(created.out);
  EXPECT_EQ(key["key_name"], "backup");
  EXPECT_EQ(key["primary_dek_version"], 1);
  // A tenant of the same name is another key set.
  ASSERT_EQ(RunCommand(Kmsctl("tenant create backup")).exit_code, 0);
  EXPECT_EQ(RunCommand(Kmsctl("key create backup 2>&1")).exit_code, 1);

  auto listed = RunCommand(Kmsctl("key list -o json"));
  ASSERT_EQ(listed.exit_code, 0);
  bool found = false;
  const Json keys = Json::parse(listed.out);
  for (const Json& k : keys["keys"]) found = found || k["key_name"] == "backup";
  EXPECT_TRUE(found) << listed.out;
  auto tenants = RunCommand(Kmsctl("tenant list --all -o json"));
  ASSERT_EQ(tenants.exit_code, 0);
  EXPECT_EQ(tenants.out.find("key:"), std::string::npos) << tenants.out;
  EXPECT_NE(tenants.out.find("\"backup\""), std::string::npos);

  auto rotated = RunCommand(Kmsctl("key rotate backup -o json"));
  ASSERT_EQ(rotated.exit_code, 0);
  EXPECT_EQ(Json::parse(rotated.out)["primary_dek_version"], 2);
  auto versions = RunCommand(Kmsctl("keys list --key backup -o json"));
  ASSERT_EQ(versions.exit_code, 0) << versions.out;
  Json v = Json::parse(versions.out);
  ASSERT_EQ(v["tenants"].size(), 1u) << versions.out;
  EXPECT_EQ(v["tenants"][0]["dek_versions"].size(), 2u);

  auto unknown = RunCommand(Kmsctl("key get nobody 2>&1"));
  EXPECT_EQ(unknown.exit_code, 1);
  EXPECT_NE(unknown.out.find("NOT_FOUND: named key not found"), std::string::npos) << unknown.out;
  auto both = RunCommand(Kmsctl("encrypt --tenant acme --key backup --data x 2>&1"));
  EXPECT_EQ(both.exit_code, 2);
}

TEST_F(DataKeysE2eTest, ADataKeyEncryptsWithAnotherToolAndItsWrappedFormGivesItBack) {
  ASSERT_NO_FATAL_FAILURE(CreateNamedKey("backup"));
  const Context job = {{"job", "nightly-2026-11-30"}};
  v1::GenerateDataKeyResponse generated;
  grpc::Status s = Generate("backup", "", "backup", job, &generated);
  ASSERT_TRUE(s.ok()) << s.error_message();
  ASSERT_EQ(generated.plaintext().size(), 32u);
  EXPECT_EQ(generated.wrapped_key().size(), 32u + 33u);

  // python3-cryptography encrypts a file with the key; the key is then forgotten.
  const std::string key_file = WritePrivate("backup.key", generated.plaintext());
  const std::string archive = dir_->Write("archive.tar", std::string(100000, 'a') + "the end", 0600);
  ASSERT_EQ(RunCommand(absl::StrCat(kPython, " encrypt ", key_file, " ", archive, " ",
                                    archive, ".enc"))
                .exit_code,
            0);
  ASSERT_EQ(unlink(key_file.c_str()), 0);

  // The restore job unwraps the wrapped form, and the other tool decrypts with it.
  v1::DecryptDataKeyResponse unwrapped;
  s = Unwrap("restore", "", "backup", generated.wrapped_key(), job, &unwrapped);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(unwrapped.plaintext(), generated.plaintext());
  const std::string key_again = WritePrivate("restore.key", unwrapped.plaintext());
  ASSERT_EQ(RunCommand(absl::StrCat(kPython, " decrypt ", key_again, " ", archive, ".enc ",
                                    archive, ".out"))
                .exit_code,
            0);
  EXPECT_EQ(test::ReadFileOrEmpty(archive + ".out"), test::ReadFileOrEmpty(archive));

  // The wrapped form is Encrypt's output: Decrypt (the operator may) opens it too.
  {
    grpc::ClientContext ctx;
    e2e::Deadline(ctx);
    v1::DecryptRequest req;
    req.set_key_name("backup");
    req.set_ciphertext(generated.wrapped_key());
    (*req.mutable_context())["job"] = "nightly-2026-11-30";
    v1::DecryptResponse resp;
    s = Keys("operator")->Decrypt(&ctx, req, &resp);
    ASSERT_TRUE(s.ok()) << s.error_message();
    EXPECT_EQ(resp.plaintext(), generated.plaintext());
  }
}

TEST_F(DataKeysE2eTest, AWrappedKeyUnderAnotherKeySetOrContextFails) {
  ASSERT_NO_FATAL_FAILURE(CreateNamedKey("backup"));
  ASSERT_NO_FATAL_FAILURE(CreateNamedKey("clickhouse-disk"));
  ASSERT_NO_FATAL_FAILURE(CreateTenant("acme"));
  const Context job = {{"job", "a"}};
  v1::GenerateDataKeyResponse generated;
  ASSERT_TRUE(Generate("operator", "", "backup", job, &generated).ok());
  v1::DecryptDataKeyResponse out;
  grpc::Status s = Unwrap("operator", "", "clickhouse-disk", generated.wrapped_key(), job, &out);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(s.error_message(), "decryption failed");
  s = Unwrap("operator", "acme", "", generated.wrapped_key(), job, &out);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  s = Unwrap("operator", "", "backup", generated.wrapped_key(), {{"job", "b"}}, &out);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  s = Unwrap("operator", "", "backup", generated.wrapped_key(), {}, &out);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  s = Unwrap("operator", "", "nobody", generated.wrapped_key(), job, &out);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(s.error_message(), "named key not found");
  s = Generate("operator", "", "nobody", job, &generated);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
  s = Generate("operator", "acme", "backup", job, &generated);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(DataKeysE2eTest, EachDataKeyRpcIsItsOwnPolicyOperation) {
  ASSERT_NO_FATAL_FAILURE(CreateNamedKey("backup"));
  ASSERT_NO_FATAL_FAILURE(CreateNamedKey("clickhouse-disk"));
  v1::GenerateDataKeyResponse generated;
  ASSERT_TRUE(Generate("backup", "", "backup", {}, &generated).ok());
  // backup may generate under key:backup only, and may not unwrap nor Decrypt.
  EXPECT_EQ(Generate("backup", "", "clickhouse-disk", {}, &generated).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  v1::DecryptDataKeyResponse out;
  EXPECT_EQ(Unwrap("backup", "", "backup", generated.wrapped_key(), {}, &out).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  // restore may unwrap but not generate; billing (encrypt/decrypt on every tenant) may
  // do neither.
  EXPECT_TRUE(Unwrap("restore", "", "backup", generated.wrapped_key(), {}, &out).ok());
  EXPECT_EQ(Generate("restore", "", "backup", {}, &generated).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(Generate("billing", "", "backup", {}, &generated).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  // Without plaintext: its own grant, and no plaintext in the answer.
  grpc::ClientContext ctx;
  e2e::Deadline(ctx);
  v1::GenerateDataKeyWithoutPlaintextRequest req;
  req.set_key_name("backup");
  v1::GenerateDataKeyWithoutPlaintextResponse resp;
  grpc::Status s = Keys("backup")->GenerateDataKeyWithoutPlaintext(&ctx, req, &resp);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_TRUE(Unwrap("restore", "", "backup", resp.wrapped_key(), {}, &out).ok());
  EXPECT_EQ(out.plaintext().size(), 32u);
}

// --- kmsctl datakey, encrypt-file, decrypt-file

TEST_F(DataKeysE2eTest, KmsctlDatakeyWritesAPrivateKeyFileThatAnotherToolUsesAndNeverReplacesOne) {
  ASSERT_NO_FATAL_FAILURE(CreateNamedKey("backup"));
  const std::string key_file = dir_->Join("job.key");
  auto gen = RunCommand(Kmsctl(absl::StrCat("datakey generate --key backup --context job=j1 ",
                                            "--plaintext-out ", key_file)));
  ASSERT_EQ(gen.exit_code, 0) << gen.out;
  struct stat st;
  ASSERT_EQ(stat(key_file.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  const std::string hex = test::ReadFileOrEmpty(key_file);
  ASSERT_EQ(hex.size(), 65u);  // ClickHouse's key_hex: 64 hex digits (and a newline)
  EXPECT_EQ(hex.find_first_not_of("0123456789abcdef"), 64u);
  const std::string wrapped_b64 = gen.out.substr(0, gen.out.find('\n'));

  // An existing file stops the command: exit 2, the file untouched.
  auto again = RunCommand(Kmsctl(absl::StrCat("datakey generate --key backup --plaintext-out ",
                                              key_file, " 2>&1")));
  EXPECT_EQ(again.exit_code, 2);
  EXPECT_NE(again.out.find("exists"), std::string::npos) << again.out;
  EXPECT_EQ(test::ReadFileOrEmpty(key_file), hex);

  // python3-cryptography encrypts with the hex key.
  const std::string data = dir_->Write("clickhouse.part", "column data " + std::string(5000, 'z'), 0600);
  ASSERT_EQ(RunCommand(absl::StrCat(kPython, " encrypt ", key_file, " ", data, " ", data, ".enc"))
                .exit_code,
            0);
  // datakey decrypt reads the wrapped key from stdin and gives the raw key back.
  const std::string raw_file = dir_->Join("job.raw");
  auto dec = RunCommand(Kmsctl(absl::StrCat("datakey decrypt --key backup --context job=j1 ",
                                            "--format raw --plaintext-out ", raw_file)),
                        wrapped_b64 + "\n");
  ASSERT_EQ(dec.exit_code, 0) << dec.out;
  EXPECT_EQ(test::ReadFileOrEmpty(raw_file).size(), 32u);
  ASSERT_EQ(RunCommand(absl::StrCat(kPython, " decrypt ", raw_file, " ", data, ".enc ", data,
                                    ".out"))
                .exit_code,
            0);
  EXPECT_EQ(test::ReadFileOrEmpty(data + ".out"), test::ReadFileOrEmpty(data));

  // The wrong context: exit 1 and no key file left behind.
  const std::string wrong = dir_->Join("wrong.key");
  auto bad = RunCommand(Kmsctl(absl::StrCat("datakey decrypt --key backup --context job=j2 ",
                                            "--plaintext-out ", wrong, " --wrapped ",
                                            wrapped_b64, " 2>&1")));
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.out.find("INVALID_ARGUMENT"), std::string::npos) << bad.out;
  EXPECT_NE(access(wrong.c_str(), F_OK), 0);
  // Without --plaintext-out only the wrapped key is made (and decrypt insists on one).
  auto only_wrapped = RunCommand(Kmsctl("datakey generate --key backup -o json"));
  ASSERT_EQ(only_wrapped.exit_code, 0);
  EXPECT_TRUE(Json::parse(only_wrapped.out).contains("wrapped_key"));
  EXPECT_EQ(RunCommand(Kmsctl("datakey decrypt --key backup --wrapped AAAA 2>&1")).exit_code, 2);
  // --plaintext-out - writes the key to stdout on purpose (the wrapped key to stderr).
  auto to_stdout = RunCommand(Kmsctl("datakey generate --key backup --plaintext-out - 2>/dev/null"));
  ASSERT_EQ(to_stdout.exit_code, 0);
  EXPECT_EQ(to_stdout.out.size(), 65u);
}

class EncryptFileSizeTest : public DataKeysE2eTest, public ::testing::WithParamInterface<size_t> {};

TEST_P(EncryptFileSizeTest, RoundTripsThroughFilesAndPipes) {
  ASSERT_NO_FATAL_FAILURE(CreateNamedKey("backup"));
  const size_t n = GetParam();
  std::string plain(n, '\0');
  for (size_t i = 0; i < n; ++i) plain[i] = static_cast<char>((i * 7919) & 0xff);
  const std::string base = dir_->Join(absl::StrCat("f", n));
  const std::string in = dir_->Write(absl::StrCat("f", n, ".in"), plain, 0600);
  auto enc = RunCommand(Kmsctl(absl::StrCat("encrypt-file --key backup --context set=", n,
                                            " --in ", in, " --out ", base, ".kenc")));
  ASSERT_EQ(enc.exit_code, 0) << enc.out;
  const std::string file = test::ReadFileOrEmpty(base + ".kenc");
  const size_t segments = n == 0 ? 1 : (n + 65535) / 65536;
  EXPECT_GT(file.size(), n + segments * 16);
  EXPECT_EQ(file.substr(0, 8), "KMSDFILE");
  auto dec = RunCommand(Kmsctl(absl::StrCat("decrypt-file --in ", base, ".kenc --out ", base, ".out")));
  ASSERT_EQ(dec.exit_code, 0) << dec.out;
  EXPECT_EQ(test::ReadFileOrEmpty(base + ".out"), plain);
  // Pipes both ways.
  auto piped = RunCommand(Kmsctl(absl::StrCat("encrypt-file --key backup < ", in, " | ",
                                              KMSCTL_BINARY, " --config ", state_,
                                              "/kmsctl.json decrypt-file --key backup")));
  ASSERT_EQ(piped.exit_code, 0);
  EXPECT_EQ(piped.out, plain);
}

// 0 bytes, 1 byte, exactly one 64 KiB segment, one more byte, several segments.
INSTANTIATE_TEST_SUITE_P(Sizes, EncryptFileSizeTest,
                         ::testing::Values(0, 1, 65536, 65537, 3 * 65536 + 100),
                         [](const auto& info) { return "Bytes" + std::to_string(info.param); });

TEST_F(DataKeysE2eTest, DecryptFileRefusesEveryTruncationASwapAndAFlippedByteAndWritesNothing) {
  ASSERT_NO_FATAL_FAILURE(CreateNamedKey("backup"));
  constexpr size_t kSeg = 4096, kSealed = kSeg + 16;
  std::string plain(5 * kSeg + 10, 'p');
  const std::string in = dir_->Write("cut.in", plain, 0600);
  const std::string enc_path = dir_->Join("cut.kenc");
  ASSERT_EQ(RunCommand(Kmsctl(absl::StrCat("encrypt-file --key backup --segment-size 4096 --in ",
                                           in, " --out ", enc_path)))
                .exit_code,
            0);
  const std::string file = test::ReadFileOrEmpty(enc_path);
  const size_t header = file.size() - plain.size() - 6 * 16;
  auto refused = [&](const std::string& bytes, const std::string& label) {
    const std::string path = dir_->Write("bad.kenc", bytes, 0600);
    const std::string out = dir_->Join("bad.out");
    auto r = RunCommand(Kmsctl(absl::StrCat("decrypt-file --in ", path, " --out ", out, " 2>&1")));
    EXPECT_EQ(r.exit_code, 1) << label << ": " << r.out;
    EXPECT_NE(access(out.c_str(), F_OK), 0) << label << ": a plaintext file was left";
    unlink(path.c_str());
  };
  for (size_t keep = 0; keep < 6; ++keep) {
    refused(file.substr(0, header + keep * kSealed), absl::StrCat("cut after ", keep, " segments"));
  }
  std::string swapped = file;
  swapped.replace(header + kSealed, kSealed, file.substr(header + 2 * kSealed, kSealed));
  swapped.replace(header + 2 * kSealed, kSealed, file.substr(header + kSealed, kSealed));
  refused(swapped, "segments 1 and 2 swapped");
  std::string flipped = file;
  flipped[header + 3 * kSealed + 100] ^= 0x20;
  refused(flipped, "a flipped byte");
  refused(file + "trailing", "bytes after the last segment");
  refused("not an encrypted file", "another format");
  // The right file under the wrong --key is refused before kmsd is asked.
  auto wrong_key = RunCommand(Kmsctl(absl::StrCat("decrypt-file --key clickhouse-disk --in ",
                                                  enc_path, " --out - 2>&1")));
  EXPECT_EQ(wrong_key.exit_code, 1);
  // And an existing --out is never replaced.
  const std::string existing = dir_->Write("existing.out", "keep me", 0600);
  EXPECT_EQ(RunCommand(Kmsctl(absl::StrCat("decrypt-file --in ", enc_path, " --out ", existing)))
                .exit_code,
            2);
  EXPECT_EQ(test::ReadFileOrEmpty(existing), "keep me");
}

// Several hundred MB through a pipe: both ends keep a flat memory (max RSS measured with
// /usr/bin/time) and the bytes come back identical.
TEST_F(DataKeysE2eTest, HundredsOfMegabytesStreamThroughAPipeInFlatMemory) {
  ASSERT_NO_FATAL_FAILURE(CreateNamedKey("backup"));
  const std::string cfg = absl::StrCat(" --config ", state_, "/kmsctl.json ");
  auto rss_of = [&](size_t mib, const std::string& label) -> std::pair<long, long> {
    const std::string enc_rss = dir_->Join(label + ".enc.rss"), dec_rss = dir_->Join(label + ".dec.rss");
    const std::string cmd = absl::StrCat(
        "set -o pipefail; head -c ", mib, "M /dev/urandom | tee >(sha256sum > ", dir_->Join(label),
        ".in.sha) | /usr/bin/time -f %M -o ", enc_rss, " ", KMSCTL_BINARY, cfg,
        "encrypt-file --key backup | /usr/bin/time -f %M -o ", dec_rss, " ", KMSCTL_BINARY, cfg,
        "decrypt-file | sha256sum > ", dir_->Join(label), ".out.sha");
    auto r = RunCommand(absl::StrCat("bash -c '", cmd, "'"));
    EXPECT_EQ(r.exit_code, 0) << cmd;
    sleep(1);  // tee's process substitution finishes writing
    EXPECT_EQ(test::ReadFileOrEmpty(dir_->Join(label) + ".in.sha"),
              test::ReadFileOrEmpty(dir_->Join(label) + ".out.sha"));
    return {std::atol(test::ReadFileOrEmpty(enc_rss).c_str()),
            std::atol(test::ReadFileOrEmpty(dec_rss).c_str())};
  };
  const auto small = rss_of(1, "small");
  const auto large = rss_of(384, "large");
  std::cout << "max RSS (KiB): encrypt 1 MiB " << small.first << ", 384 MiB " << large.first
            << "; decrypt 1 MiB " << small.second << ", 384 MiB " << large.second << "\n";
  ASSERT_GT(small.first, 0);
  // Flat: the 384 MiB run needs no more than 16 MiB beyond the 1 MiB run.
  EXPECT_LT(large.first, small.first + 16 * 1024);
  EXPECT_LT(large.second, small.second + 16 * 1024);
}

// --- Blind indexes

TEST_F(DataKeysE2eTest, BlindIndexMatchesNormalizedFormsDiffersPerTenantAndNeedsNoDecrypt) {
  ASSERT_NO_FATAL_FAILURE(CreateTenant("bidx-acme"));
  ASSERT_NO_FATAL_FAILURE(CreateTenant("bidx-globex"));
  auto index = [&](const std::string& client, const std::string& tenant,
                   const std::string& normalization, const std::string& value,
                   v1::ComputeBlindIndexResponse* resp) {
    grpc::ClientContext ctx;
    e2e::Deadline(ctx);
    v1::ComputeBlindIndexRequest req;
    req.set_tenant_id(tenant);
    req.set_normalization(normalization);
    req.set_value(value);
    return Keys(client)->ComputeBlindIndex(&ctx, req, resp);
  };
  // "search" holds compute_blind_index and nothing else.
  v1::ComputeBlindIndexResponse a, b, c;
  ASSERT_TRUE(index("search", "bidx-acme", "email", " Alice@Example.COM ", &a).ok());
  ASSERT_TRUE(index("search", "bidx-acme", "email", "alice@example.com", &b).ok());
  ASSERT_TRUE(index("search", "bidx-globex", "email", "alice@example.com", &c).ok());
  EXPECT_EQ(a.current().index().size(), 32u);
  EXPECT_EQ(a.current().index(), b.current().index());
  EXPECT_NE(a.current().index(), c.current().index());
  EXPECT_FALSE(a.has_previous());
  {
    grpc::ClientContext ctx;
    e2e::Deadline(ctx);
    v1::DecryptRequest req;
    req.set_tenant_id("bidx-acme");
    req.set_ciphertext(std::string(40, 'x'));
    v1::DecryptResponse resp;
    EXPECT_EQ(Keys("search")->Decrypt(&ctx, req, &resp).error_code(),
              grpc::StatusCode::PERMISSION_DENIED);
  }
  // billing may encrypt and decrypt but not index.
  EXPECT_EQ(index("billing", "bidx-acme", "email", "a@b", &a).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  // Bad input: clear statuses.
  grpc::Status s = index("search", "bidx-acme", "soundex", "x", &a);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("unknown normalization"), std::string::npos);
  EXPECT_EQ(index("search", "bidx-acme", "email", "", &a).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(index("search", "bidx-nobody", "email", "a@b", &a).error_code(),
            grpc::StatusCode::NOT_FOUND);

  // kmsctl: the same index for both spellings, one per line.
  auto hexes = RunCommand(Kmsctl("index compute --tenant bidx-acme --normalization email"),
                          " Alice@Example.COM \nalice@example.com\n");
  ASSERT_EQ(hexes.exit_code, 0) << hexes.out;
  const std::string first = hexes.out.substr(0, 64);
  EXPECT_EQ(hexes.out, first + "\n" + first + "\n");
  // An oversized batch is refused whole.
  std::string many;
  for (int i = 0; i < 2000; ++i) many += "a@b\n";
  EXPECT_EQ(RunCommand(Kmsctl("index compute --tenant bidx-acme --normalization email 2>/dev/null"),
                       many)
                .exit_code,
            1);
}

TEST_F(DataKeysE2eTest, ABlindIndexRotationReturnsBothIndexesUntilTheOperatorFinishesIt) {
  ASSERT_NO_FATAL_FAILURE(CreateTenant("bidx-rot"));
  auto compute = [&]() {
    auto r = RunCommand(Kmsctl("index compute --tenant bidx-rot --normalization ip "
                               "--value 2001:DB8:0:0:0:0:0:1 -o json"));
    EXPECT_EQ(r.exit_code, 0) << r.out;
    return Json::parse(r.out)[0];
  };
  const Json before = compute();
  EXPECT_EQ(before["index_key_version"], 1);
  EXPECT_FALSE(before.contains("previous_index"));
  auto rotated = RunCommand(Kmsctl("index rotate --tenant bidx-rot -o json"));
  ASSERT_EQ(rotated.exit_code, 0) << rotated.out;
  EXPECT_EQ(Json::parse(rotated.out)["index_key_version"], 2);
  const Json during = compute();
  EXPECT_EQ(during["index_key_version"], 2);
  EXPECT_NE(during["index"], before["index"]);
  EXPECT_EQ(during["previous_index"], before["index"]);
  EXPECT_EQ(RunCommand(Kmsctl("index rotate --tenant bidx-rot 2>&1")).exit_code, 1);
  ASSERT_EQ(RunCommand(Kmsctl("index finish --tenant bidx-rot")).exit_code, 0);
  const Json after = compute();
  EXPECT_EQ(after["index"], during["index"]);
  EXPECT_FALSE(after.contains("previous_index"));
  // The tenant listing shows no index key rows.
  auto tenants = RunCommand(Kmsctl("tenant list --all -o json"));
  EXPECT_EQ(tenants.out.find("bidx:"), std::string::npos);
}

// Named keys and blind-index keys are rows like tenants: a KEK rotation's re-wrap job
// moves them to the new KEK, and everything made before still works after it.
TEST_F(DataKeysE2eTest, NamedAndIndexKeysAreRewrappedByAKekRotation) {
  ASSERT_NO_FATAL_FAILURE(CreateNamedKey("rewrap"));
  ASSERT_NO_FATAL_FAILURE(CreateTenant("rewrap-t"));
  v1::GenerateDataKeyResponse generated;
  ASSERT_TRUE(Generate("operator", "", "rewrap", {}, &generated).ok());
  auto index_before = RunCommand(Kmsctl("index compute --tenant rewrap-t --value x"));
  ASSERT_EQ(index_before.exit_code, 0);
  auto rotated = RunCommand(Kmsctl("kek rotate --wait --poll 0.2 -o json"));
  ASSERT_EQ(rotated.exit_code, 0) << rotated.out;
  const uint32_t primary = Json::parse(rotated.out.substr(0, rotated.out.find('\n')))["primary_kek_version"];
  auto keys = RunCommand(Kmsctl("keys list --all -o json"));
  ASSERT_EQ(keys.exit_code, 0);
  const Json listed = Json::parse(keys.out);
  for (const Json& k : listed["keks"]) {
    if (k["version"] != primary) EXPECT_NE(k["state"], "active") << keys.out;
  }
  auto named = RunCommand(Kmsctl("keys list --key rewrap -o json"));
  ASSERT_EQ(named.exit_code, 0);
  EXPECT_EQ(Json::parse(named.out)["tenants"][0]["dek_versions"][0]["kek_version"], primary);
  v1::DecryptDataKeyResponse out;
  EXPECT_TRUE(Unwrap("operator", "", "rewrap", generated.wrapped_key(), {}, &out).ok());
  EXPECT_EQ(out.plaintext(), generated.plaintext());
  EXPECT_EQ(RunCommand(Kmsctl("index compute --tenant rewrap-t --value x")).out, index_before.out);
}

// --- CRC32C integrity fields, confirmed by python3-crc32c

uint32_t PythonCrc(test::TempDir& dir, const std::string& bytes) {
  const std::string path = dir.Write("crc.bin", bytes, 0600);
  auto r = RunCommand(absl::StrCat("/usr/bin/python3 ", KMS_DATAKEYS_DIR, "/crc32c_of.py ", path));
  EXPECT_EQ(r.exit_code, 0);
  return static_cast<uint32_t>(std::stoul(r.out));
}

uint32_t PythonContextCrc(const Context& context) {
  Json j = Json::object();
  for (const auto& [k, v] : context) j[k] = v;
  auto r = RunCommand(absl::StrCat("/usr/bin/python3 ", KMS_DATAKEYS_DIR, "/crc32c_of.py --context '",
                                   j.dump(), "'"));
  EXPECT_EQ(r.exit_code, 0);
  return static_cast<uint32_t>(std::stoul(r.out));
}

TEST_F(DataKeysE2eTest, ChecksumsAreVerifiedOnRequestsAndConfirmedByAnotherImplementation) {
  ASSERT_NO_FATAL_FAILURE(CreateTenant("crc-acme"));
  ASSERT_NO_FATAL_FAILURE(CreateNamedKey("backup"));
  const Context ctx = {{"table", "users"}, {"column", "email"}};
  const std::string plain = "alice@example.com";
  auto keys = Keys("operator");

  // Encrypt with correct checksums: verified, and the ciphertext's CRC32C returned.
  v1::EncryptResponse enc;
  {
    grpc::ClientContext c;
    e2e::Deadline(c);
    v1::EncryptRequest req;
    req.set_tenant_id("crc-acme");
    req.set_plaintext(plain);
    for (const auto& [k, v] : ctx) (*req.mutable_context())[k] = v;
    req.set_plaintext_crc32c(PythonCrc(*dir_, plain));
    req.set_context_crc32c(PythonContextCrc(ctx));
    grpc::Status s = keys->Encrypt(&c, req, &enc);
    ASSERT_TRUE(s.ok()) << s.error_message();
    EXPECT_TRUE(enc.verified_plaintext_crc32c());
    EXPECT_TRUE(enc.verified_context_crc32c());
    EXPECT_EQ(enc.ciphertext_crc32c(), PythonCrc(*dir_, enc.ciphertext()));
  }
  // A wrong plaintext checksum, or a wrong context checksum: refused before anything
  // (even before the key set is looked up: an unknown tenant still gets
  // INVALID_ARGUMENT, not NOT_FOUND).
  for (const std::string tenant : {"crc-acme", "crc-nobody"}) {
    for (bool bad_context : {false, true}) {
      grpc::ClientContext c;
      e2e::Deadline(c);
      v1::EncryptRequest req;
      req.set_tenant_id(tenant);
      req.set_plaintext(plain);
      for (const auto& [k, v] : ctx) (*req.mutable_context())[k] = v;
      req.set_plaintext_crc32c(PythonCrc(*dir_, plain) ^ (bad_context ? 0 : 1));
      req.set_context_crc32c(PythonContextCrc(ctx) ^ (bad_context ? 1 : 0));
      v1::EncryptResponse resp;
      grpc::Status s = keys->Encrypt(&c, req, &resp);
      EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << tenant;
      EXPECT_NE(s.error_message().find(bad_context ? "context_crc32c" : "plaintext_crc32c"),
                std::string::npos)
          << s.error_message();
    }
  }
  // Decrypt: the ciphertext's checksum verified, the plaintext's returned.
  {
    grpc::ClientContext c;
    e2e::Deadline(c);
    v1::DecryptRequest req;
    req.set_tenant_id("crc-acme");
    req.set_ciphertext(enc.ciphertext());
    for (const auto& [k, v] : ctx) (*req.mutable_context())[k] = v;
    req.set_ciphertext_crc32c(enc.ciphertext_crc32c());
    v1::DecryptResponse dec;
    ASSERT_TRUE(keys->Decrypt(&c, req, &dec).ok());
    EXPECT_TRUE(dec.verified_ciphertext_crc32c());
    EXPECT_FALSE(dec.verified_context_crc32c());
    EXPECT_EQ(dec.plaintext_crc32c(), PythonCrc(*dir_, plain));
    grpc::ClientContext c2;
    e2e::Deadline(c2);
    req.set_ciphertext_crc32c(enc.ciphertext_crc32c() + 1);
    EXPECT_EQ(keys->Decrypt(&c2, req, &dec).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  }
  // Batches: a bad item is that item's error, the others are done and carry checksums.
  {
    grpc::ClientContext c;
    e2e::Deadline(c);
    v1::EncryptBatchRequest req;
    req.set_tenant_id("crc-acme");
    for (int i = 0; i < 3; ++i) {
      auto* item = req.add_items();
      item->set_plaintext(absl::StrCat("item ", i));
      item->set_plaintext_crc32c(PythonCrc(*dir_, item->plaintext()) + (i == 1 ? 1 : 0));
    }
    v1::EncryptBatchResponse resp;
    ASSERT_TRUE(keys->EncryptBatch(&c, req, &resp).ok());
    ASSERT_EQ(resp.results_size(), 3);
    EXPECT_TRUE(resp.results(0).has_ok());
    EXPECT_EQ(resp.results(1).error().code(), 3);  // INVALID_ARGUMENT
    EXPECT_EQ(resp.results(2).ok().ciphertext_crc32c(),
              PythonCrc(*dir_, resp.results(2).ok().ciphertext()));
    grpc::ClientContext c2;
    e2e::Deadline(c2);
    v1::DecryptBatchRequest dreq;
    dreq.set_tenant_id("crc-acme");
    auto* item = dreq.add_items();
    item->set_ciphertext(resp.results(2).ok().ciphertext());
    item->set_ciphertext_crc32c(resp.results(2).ok().ciphertext_crc32c());
    v1::DecryptBatchResponse dresp;
    ASSERT_TRUE(keys->DecryptBatch(&c2, dreq, &dresp).ok());
    EXPECT_TRUE(dresp.results(0).ok().verified_ciphertext_crc32c());
    EXPECT_EQ(dresp.results(0).ok().plaintext_crc32c(), PythonCrc(*dir_, "item 2"));
  }
  // Data keys: the key's and the wrapped key's checksums, and the wrapped key's verified.
  {
    const Context job = {{"job", "crc"}};
    grpc::ClientContext c;
    e2e::Deadline(c);
    v1::GenerateDataKeyRequest req;
    req.set_key_name("backup");
    (*req.mutable_context())["job"] = "crc";
    req.set_context_crc32c(PythonContextCrc(job));
    v1::GenerateDataKeyResponse gen;
    ASSERT_TRUE(keys->GenerateDataKey(&c, req, &gen).ok());
    EXPECT_TRUE(gen.verified_context_crc32c());
    EXPECT_EQ(gen.plaintext_crc32c(), PythonCrc(*dir_, gen.plaintext()));
    EXPECT_EQ(gen.wrapped_key_crc32c(), PythonCrc(*dir_, gen.wrapped_key()));
    grpc::ClientContext c2;
    e2e::Deadline(c2);
    v1::DecryptDataKeyRequest dreq;
    dreq.set_key_name("backup");
    dreq.set_wrapped_key(gen.wrapped_key());
    (*dreq.mutable_context())["job"] = "crc";
    dreq.set_wrapped_key_crc32c(gen.wrapped_key_crc32c());
    v1::DecryptDataKeyResponse dk;
    ASSERT_TRUE(keys->DecryptDataKey(&c2, dreq, &dk).ok());
    EXPECT_TRUE(dk.verified_wrapped_key_crc32c());
    EXPECT_EQ(dk.plaintext_crc32c(), gen.plaintext_crc32c());
    grpc::ClientContext c3;
    e2e::Deadline(c3);
    dreq.set_wrapped_key_crc32c(gen.wrapped_key_crc32c() ^ 0x80000000u);
    grpc::Status s = keys->DecryptDataKey(&c3, dreq, &dk);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_NE(s.error_message().find("wrapped_key_crc32c"), std::string::npos);
  }
}

}  // namespace
}  // namespace kms
