// The two standard doors of issue 15 against a real kmsd (SoftHSM2, SQLite), with other
// people's clients:
//   - the AWS XKS proxy API, requests signed by botocore's SigV4 signer (Debian's
//     python3-botocore: tests/e2e/xks/xks_request.py) and by curl --aws-sigv4, for every
//     operation and error case the issue lists;
//   - the Kubernetes KMS v2 plugin, a Python client generated from the official
//     api.proto (tests/e2e/k8s_kms/kms_client.py) over the unix socket, and the socket's
//     file mode enforced by the OS for another user (runuser).
// One kmsd serves both suites (a first start generates an RSA-4096 key).
#include <openssl/sha.h>
#include <sys/stat.h>

#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "kms/v1/admin_service.grpc.pb.h"
#include "nlohmann/json.hpp"
#include "src/common/base64.h"
#include "tests/e2e/e2e_support.h"
#include "tests/test_common/kmsd_process.h"
#include "tests/test_common/temp_dir.h"

namespace kms {
namespace {

using ::testing::HasSubstr;
using Json = nlohmann::json;
using test::RunCommand;

constexpr char kPython[] = "/usr/bin/python3";
constexpr char kRegion[] = "eu-west-1";
constexpr char kPrefix[] = "/keystores/e2e";
constexpr char kKey1[] = "AKIAXKSE2EFIRSTKEY2345";   // 22 chars of A-Z2-7
constexpr char kKey2[] = "AKIAXKSE2ESECONDKEY234";
constexpr char kSecret1[] = "FYtE5EFA5FT0mCc3DrGUe2sti527BitkQ0Zr9MO9fvE=";
constexpr char kSecret2[] = "VU6W2byoiBrhDqNGbx703oL0syCAmhlQgwNUT1234567";

std::string B64(const std::string& s) {
  return Base64Encode(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(s.data()), s.size()));
}
std::string Unb64(const std::string& s) {
  auto bytes = Base64Decode(s);
  return bytes.ok() ? std::string(bytes->begin(), bytes->end()) : "<not base64>";
}
std::string Quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out.push_back(c);
    }
  }
  return out + "'";
}

class DoorsEnv {
 public:
  static DoorsEnv& Get() {
    if (instance_ == nullptr) instance_ = new DoorsEnv();
    return *instance_;
  }
  // Stops kmsd and removes the files (a gtest Environment calls it after the last test).
  static void Release() {
    delete instance_;
    instance_ = nullptr;
  }
  ~DoorsEnv() {
    if (kmsd) kmsd->Stop();
  }
  bool ok = false;
  std::unique_ptr<test::TempDir> dir;
  std::unique_ptr<test::TempDir> pub;  // traversable by other users: socket and stubs
  std::string state, socket, stubs;
  std::unique_ptr<test::KmsdProcess> kmsd;

 private:
  DoorsEnv() { ok = Setup(); }
  static DoorsEnv* instance_;
  bool Setup() {
    dir = std::make_unique<test::TempDir>("kmsd-doors-e2e-");
    pub = std::make_unique<test::TempDir>("kmsd-doors-pub-");
    if (chmod(pub->path().c_str(), 0755) != 0) return false;
    state = dir->Join("state");
    {
      auto dev = test::KmsdProcess::Start(
          KMSD_BINARY, {"--dev", "--state-dir", state, "--grpc-listen", "127.0.0.1:0", "--http-listen", ""},
          dir->Join("dev.log"));
      if (!dev.ok()) {
        ADD_FAILURE() << dev.status();
        return false;
      }
      (*dev)->Stop();
    }
    // The dev policy plus the doors' identities and the per-key operations.
    Json policy = Json::parse(test::ReadFileOrEmpty(state + "/policy.json"));
    policy["identities"].push_back({{"identity", "aws-kms-xks"},
                                    {"operations", {"encrypt", "decrypt", "get_tenant"}},
                                    {"tenants", {"xks-*"}}});
    policy["identities"].push_back({{"identity", "k8s-kms-plugin"},
                                    {"operations", {"encrypt", "decrypt", "get_status"}},
                                    {"tenants", {"k8s-secrets"}}});
    policy["keys"] = {{{"key", "xks-encrypt-only"}, {"operations", {"encrypt"}}},
                      {{"key", "xks-decrypt-only"}, {"operations", {"decrypt"}}}};
    const std::string policy_path = dir->Write("policy.json", policy.dump(2), 0644);
    dir->Write("secret1", kSecret1);
    dir->Write("secret2", std::string(kSecret2) + "\n");
    socket = pub->Join("kms.sock");
    Json config = e2e::DevStateConfig(state, dir->Join("doors.db"));
    config["policy_file"] = policy_path;
    config["http"]["listen"] = "127.0.0.1:0";  // for /metrics
    config["audit"] = {{"flush_interval_ms", 100}};
    config["xks"] = {{"listen", "127.0.0.1:0"},
                     {"tls", {{"cert_file", state + "/pki/server.pem"}, {"key_file", state + "/pki/server.key"}}},
                     {"uri_prefix", kPrefix},
                     {"region", kRegion},
                     {"credentials",
                      {{{"access_key_id", kKey1}, {"secret_access_key_file", dir->Join("secret1")}},
                       {{"access_key_id", kKey2}, {"secret_access_key_file", dir->Join("secret2")}}}},
                     {"health_key", "xks-health"}};
    config["k8s_kms"] = {{"socket_path", socket}, {"socket_mode", "0600"}, {"key", "k8s-secrets"}};
    const std::string path = dir->Write("kmsd.json", config.dump(2), 0644);
    auto p = test::KmsdProcess::Start(KMSD_BINARY, {"--config", path}, dir->Join("kmsd.log"));
    if (!p.ok()) {
      ADD_FAILURE() << p.status();
      return false;
    }
    kmsd = std::move(*p);
    if (kmsd->xks_port() == 0) {
      ADD_FAILURE() << "the ready line names no XKS port";
      return false;
    }
    for (const char* t : {"xks-key-1", "xks-encrypt-only", "xks-decrypt-only", "xks-health",
                          "xks-shredded", "xks-rotating", "other-key", "k8s-secrets"}) {
      grpc::ClientContext ctx;
      e2e::Deadline(ctx);
      v1::CreateTenantRequest req;
      req.set_tenant_id(t);
      v1::CreateTenantResponse resp;
      grpc::Status s = Admin()->CreateTenant(&ctx, req, &resp);
      if (!s.ok()) {
        ADD_FAILURE() << t << ": " << s.error_message();
        return false;
      }
    }
    // Python stubs from the vendored official api.proto.
    stubs = pub->Join("stubs");
    mkdir(stubs.c_str(), 0755);
    auto gen = RunCommand(absl::StrCat(
        "protoc -I ", KMS_K8S_PROTO_DIR, " --python_out=", stubs, " --grpc_out=", stubs,
        " --plugin=protoc-gen-grpc=/usr/bin/grpc_python_plugin ", KMS_K8S_PROTO_DIR, "/api.proto 2>&1"));
    if (gen.exit_code != 0) {
      ADD_FAILURE() << gen.out;
      return false;
    }
    RunCommand(absl::StrCat("chmod -R a+rX ", stubs));
    return true;
  }

 public:
  std::unique_ptr<v1::AdminService::Stub> Admin() const {
    return v1::AdminService::NewStub(e2e::DevChannel(state, kmsd->grpc_addr(), "operator"));
  }
};

DoorsEnv* DoorsEnv::instance_ = nullptr;

class DoorsEnvironment : public ::testing::Environment {
 public:
  void TearDown() override { DoorsEnv::Release(); }
};
const auto* const kDoorsEnvironment = ::testing::AddGlobalTestEnvironment(new DoorsEnvironment);

// ---------------------------------------------------------------- XKS

struct XksAnswer {
  int status = 0;
  Json body;
  std::string raw;
};

// How one XKS request is signed and sent.
struct Options {
  std::string access_key = kKey1;
  std::string secret_file = "secret1";
  int time_offset = 0;
  std::optional<std::string> send_body;
  std::string region = kRegion;
  std::string full_path;  // instead of Url(path)
};

class XksE2eTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(DoorsEnv::Get().ok); }
  DoorsEnv& env() { return DoorsEnv::Get(); }

  std::string Url(const std::string& path) const {
    return absl::StrCat("https://localhost:", DoorsEnv::Get().kmsd->xks_port(), kPrefix, "/kms/xks/v1", path);
  }

  XksAnswer Call(const std::string& path, const Json& body, const Options& o = Options()) {
    const std::string url = o.full_path.empty()
                                ? Url(path)
                                : absl::StrCat("https://localhost:", env().kmsd->xks_port(), o.full_path);
    std::string cmd = absl::StrCat(kPython, " ", KMS_XKS_CLIENT, " --url ", Quote(url), " --access-key-id ",
                                   o.access_key, " --secret-file ", env().dir->Join(o.secret_file),
                                   " --region ", o.region, " --cacert ", env().state, "/pki/ca.pem",
                                   " --time-offset ", o.time_offset, " --body ", Quote(body.dump()));
    if (o.send_body) absl::StrAppend(&cmd, " --send-body ", Quote(*o.send_body));
    auto r = RunCommand(cmd + " 2>&1");
    XksAnswer a;
    a.raw = r.out;
    size_t nl = r.out.find('\n');
    if (r.exit_code != 0 || nl == std::string::npos) {
      ADD_FAILURE() << "xks_request.py failed: " << r.out;
      return a;
    }
    a.status = std::stoi(r.out.substr(0, nl));
    a.body = Json::parse(r.out.substr(nl + 1), nullptr, false);
    return a;
  }

  static Json Meta(const std::string& op, const std::string& request_id = "4112f4d6-db54-4af4-ae30-c55a22a8dfae") {
    return {{"awsPrincipalArn", "arn:aws:iam::123456789012:user/Alice"},
            {"kmsKeyArn", "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"},
            {"kmsOperation", op},
            {"kmsRequestId", request_id}};
  }
  XksAnswer Encrypt(const std::string& key, const std::string& plaintext, const std::string& aad = "",
                    bool cdiv = false, const Options& o = Options()) {
    Json body = {{"requestMetadata", Meta("Encrypt")},
                 {"plaintext", B64(plaintext)},
                 {"encryptionAlgorithm", "AES_GCM"}};
    if (!aad.empty()) body["additionalAuthenticatedData"] = B64(aad);
    if (cdiv) body["ciphertextDataIntegrityValueAlgorithm"] = "SHA_256";
    return Call("/keys/" + key + "/encrypt", body, o);
  }
  static Json DecryptBody(const Json& sealed, const std::string& aad = "") {
    Json body = {{"requestMetadata", Meta("Decrypt")},
                 {"encryptionAlgorithm", "AES_GCM"},
                 {"ciphertext", sealed["ciphertext"]},
                 {"initializationVector", sealed["initializationVector"]},
                 {"authenticationTag", sealed["authenticationTag"]}};
    if (sealed.contains("ciphertextMetadata")) body["ciphertextMetadata"] = sealed["ciphertextMetadata"];
    if (!aad.empty()) body["additionalAuthenticatedData"] = B64(aad);
    return body;
  }
  XksAnswer Decrypt(const std::string& key, const Json& body, const Options& o = Options()) {
    return Call("/keys/" + key + "/decrypt", body, o);
  }
  static void ExpectError(const XksAnswer& a, int status, const std::string& name) {
    EXPECT_EQ(a.status, status) << a.raw;
    EXPECT_EQ(a.body.value("errorName", ""), name) << a.raw;
  }
  void Rotate(const std::string& tenant) {
    grpc::ClientContext ctx;
    e2e::Deadline(ctx);
    v1::RotateTenantKeyRequest req;
    req.set_tenant_id(tenant);
    v1::RotateTenantKeyResponse resp;
    ASSERT_TRUE(env().Admin()->RotateTenantKey(&ctx, req, &resp).ok());
  }
  void Retire(const std::string& tenant, uint32_t min_version) {
    grpc::ClientContext ctx;
    e2e::Deadline(ctx);
    v1::SetMinDecryptVersionRequest req;
    req.set_tenant_id(tenant);
    req.set_min_decrypt_version(min_version);
    v1::SetMinDecryptVersionResponse resp;
    grpc::Status s = env().Admin()->SetMinDecryptVersion(&ctx, req, &resp);
    ASSERT_TRUE(s.ok()) << s.error_message();
  }
};

TEST_F(XksE2eTest, HealthAnswersWithEitherCredentialPair) {
  const Json body = {{"requestMetadata", {{"kmsRequestId", "h-1"}, {"kmsOperation", "KmsHealthCheck"}}}};
  for (const auto& [key, secret] : {std::pair{kKey1, "secret1"}, std::pair{kKey2, "secret2"}}) {
    XksAnswer a = Call("/health", body, {.access_key = key, .secret_file = secret});
    ASSERT_EQ(a.status, 200) << a.raw;
    EXPECT_GE(a.body["xksProxyFleetSize"].get<int>(), 1);
    EXPECT_EQ(a.body["xksProxyVendor"], "kmsd");
    EXPECT_EQ(a.body["ekmVendor"], "kmsd");
    ASSERT_EQ(a.body["ekmFleetDetails"].size(), 1u);
    EXPECT_EQ(a.body["ekmFleetDetails"][0]["healthStatus"], "ACTIVE");
  }
}

TEST_F(XksE2eTest, CurlsOwnSigV4SignerIsAcceptedToo) {
  const std::string common = absl::StrCat(
      "curl -sS --max-time 10 --cacert ", env().state, "/pki/ca.pem --aws-sigv4 'aws:amz:", kRegion,
      ":kms-xks-proxy' --user '", kKey2, ":", kSecret2, "' -X POST -H 'Content-Type: application/json' ");
  auto health = RunCommand(absl::StrCat(
      common, "--data '{\"requestMetadata\":{\"kmsRequestId\":\"c-1\",\"kmsOperation\":\"KmsHealthCheck\"}}' '",
      Url("/health"), "' 2>&1"));
  EXPECT_THAT(health.out, HasSubstr("\"healthStatus\":\"ACTIVE\""));
  const Json enc = {{"requestMetadata", Meta("GenerateDataKey")},
                    {"plaintext", B64("Hello World!")},
                    {"encryptionAlgorithm", "AES_GCM"}};
  auto sealed = RunCommand(absl::StrCat(common, "--data ", Quote(enc.dump()), " '",
                                        Url("/keys/xks-key-1/encrypt"), "' 2>&1"));
  Json out = Json::parse(sealed.out, nullptr, false);
  ASSERT_TRUE(out.is_object() && out.contains("ciphertext")) << sealed.out;
  XksAnswer opened = Decrypt("xks-key-1", DecryptBody(out));
  ASSERT_EQ(opened.status, 200) << opened.raw;
  EXPECT_EQ(Unb64(opened.body["plaintext"]), "Hello World!");
}

TEST_F(XksE2eTest, MetadataDescribesTheKeyAndItsAllowedOperations) {
  const Json body = {{"requestMetadata", Meta("CreateKey")}};
  XksAnswer both = Call("/keys/xks-key-1/metadata", body);
  ASSERT_EQ(both.status, 200) << both.raw;
  EXPECT_EQ(both.body, Json::parse(R"({"keySpec":"AES_256","keyUsage":["ENCRYPT","DECRYPT"],"keyStatus":"ENABLED"})"));
  EXPECT_EQ(Call("/keys/xks-encrypt-only/metadata", body).body["keyUsage"], Json::parse(R"(["ENCRYPT"])"));
  EXPECT_EQ(Call("/keys/xks-decrypt-only/metadata", body).body["keyUsage"], Json::parse(R"(["DECRYPT"])"));
}

TEST_F(XksE2eTest, EncryptAndDecryptRoundTripWithAadAndTheIntegrityValue) {
  const std::string aad = "project=nile,department=marketing";
  XksAnswer sealed = Encrypt("xks-key-1", "Hello World!", aad, /*cdiv=*/true);
  ASSERT_EQ(sealed.status, 200) << sealed.raw;
  const std::string iv = Unb64(sealed.body["initializationVector"]);
  const std::string ct = Unb64(sealed.body["ciphertext"]);
  const std::string tag = Unb64(sealed.body["authenticationTag"]);
  const std::string metadata = Unb64(sealed.body["ciphertextMetadata"]);
  EXPECT_EQ(iv.size(), 12u);
  EXPECT_EQ(ct.size(), 12u);
  EXPECT_EQ(tag.size(), 16u);
  EXPECT_LE(metadata.size(), 20u);
  // The CDIV, computed here: SHA-256(aad || metadata || iv || ciphertext || tag).
  const std::string all = aad + metadata + iv + ct + tag;
  unsigned char md[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(all.data()), all.size(), md);
  EXPECT_EQ(sealed.body["ciphertextDataIntegrityValue"], Base64Encode(md));
  XksAnswer opened = Decrypt("xks-key-1", DecryptBody(sealed.body, aad));
  ASSERT_EQ(opened.status, 200) << opened.raw;
  EXPECT_EQ(Unb64(opened.body["plaintext"]), "Hello World!");
  // Without AAD too; no CDIV unless asked for.
  XksAnswer plain = Encrypt("xks-key-1", std::string(4300, 'p'));
  ASSERT_EQ(plain.status, 200) << plain.raw;  // the specification's 4300 bytes
  EXPECT_FALSE(plain.body.contains("ciphertextDataIntegrityValue"));
  EXPECT_EQ(Unb64(Decrypt("xks-key-1", DecryptBody(plain.body)).body["plaintext"]), std::string(4300, 'p'));
}

TEST_F(XksE2eTest, ACiphertextWhoseMetadataAadOrBytesChangedIsInvalidCiphertext) {
  XksAnswer sealed = Encrypt("xks-key-1", "data key bytes", "ctx");
  ASSERT_EQ(sealed.status, 200) << sealed.raw;
  ExpectError(Decrypt("xks-key-1", DecryptBody(sealed.body, "other ctx")), 400, "InvalidCiphertextException");
  ExpectError(Decrypt("xks-key-1", DecryptBody(sealed.body)), 400, "InvalidCiphertextException");
  for (const char* field : {"ciphertextMetadata", "ciphertext", "authenticationTag", "initializationVector"}) {
    Json body = DecryptBody(sealed.body, "ctx");
    std::string bytes = Unb64(body[field]);
    bytes[bytes.size() - 1] ^= 0x01;
    body[field] = B64(bytes);
    ExpectError(Decrypt("xks-key-1", body), 400, "InvalidCiphertextException");
  }
  Json no_metadata = DecryptBody(sealed.body, "ctx");
  no_metadata.erase("ciphertextMetadata");
  ExpectError(Decrypt("xks-key-1", no_metadata), 400, "InvalidCiphertextException");
  // Another key's ciphertext.
  ExpectError(Decrypt("xks-rotating", DecryptBody(sealed.body, "ctx")), 400, "InvalidCiphertextException");
}

TEST_F(XksE2eTest, UnknownKeysAndPathsAreNotFound) {
  ExpectError(Encrypt("xks-nobody", "x"), 404, "KeyNotFoundException");
  ExpectError(Call("/keys/xks-nobody/metadata", {{"requestMetadata", Meta("CreateKey")}}), 404,
              "KeyNotFoundException");
  ExpectError(Call("/keys/xks-key-1/sign", {{"requestMetadata", Meta("Sign")}}), 404, "InvalidUriPathException");
  ExpectError(Call("", {{"requestMetadata", Meta("Encrypt")}}, {.full_path = "/other/kms/xks/v1/health"}), 404,
              "InvalidUriPathException");
  // GET is refused with 405.
  auto get = RunCommand(absl::StrCat("curl -sS -o /dev/null -w '%{http_code}' --cacert ", env().state,
                                     "/pki/ca.pem '", Url("/health"), "'"));
  EXPECT_EQ(get.out, "405");
}

TEST_F(XksE2eTest, WrongCredentialsAreAuthenticationFailures) {
  const Json body = {{"requestMetadata", {{"kmsRequestId", "h-2"}, {"kmsOperation", "KmsHealthCheck"}}}};
  env().dir->Write("wrong-secret", "not-the-secret-at-all-but-long-enough-0000");
  ExpectError(Call("/health", body, {.access_key = "AKIAUNKNOWNKEY2345672", .secret_file = "secret1"}), 401,
              "AuthenticationFailedException");
  ExpectError(Call("/health", body, {.access_key = kKey1, .secret_file = "wrong-secret"}), 401,
              "AuthenticationFailedException");
  // Each id with the other's secret.
  ExpectError(Call("/health", body, {.access_key = kKey1, .secret_file = "secret2"}), 401,
              "AuthenticationFailedException");
  ExpectError(Call("/health", body, {.region = "us-east-1"}), 401, "AuthenticationFailedException");
  // No signature at all.
  auto unsigned_call = RunCommand(absl::StrCat(
      "curl -sS --cacert ", env().state, "/pki/ca.pem -X POST -H 'Content-Type: application/json' --data ",
      Quote(body.dump()), " '", Url("/health"), "'"));
  EXPECT_THAT(unsigned_call.out, HasSubstr("AuthenticationFailedException"));
}

TEST_F(XksE2eTest, AStaleOrFutureRequestDateFailsAndOneWithinFiveMinutesPasses) {
  const Json body = {{"requestMetadata", {{"kmsRequestId", "h-3"}, {"kmsOperation", "KmsHealthCheck"}}}};
  ExpectError(Call("/health", body, {.time_offset = -400}), 401, "AuthenticationFailedException");
  ExpectError(Call("/health", body, {.time_offset = 400}), 401, "AuthenticationFailedException");
  EXPECT_EQ(Call("/health", body, {.time_offset = -200}).status, 200);
  EXPECT_EQ(Call("/health", body, {.time_offset = 200}).status, 200);
}

TEST_F(XksE2eTest, ATamperedBodyFailsAuthentication) {
  Json body = {{"requestMetadata", Meta("Encrypt")}, {"plaintext", B64("pay 10")}, {"encryptionAlgorithm", "AES_GCM"}};
  Json other = body;
  other["plaintext"] = B64("pay 99");
  ExpectError(Call("/keys/xks-key-1/encrypt", body, {.send_body = other.dump()}), 401,
              "AuthenticationFailedException");
}

TEST_F(XksE2eTest, OversizedPlaintextOrAadIsUnsupportedAndMalformedInputIsValidation) {
  ExpectError(Encrypt("xks-key-1", std::string(4301, 'p')), 501, "UnsupportedOperationException");
  ExpectError(Encrypt("xks-key-1", "x", std::string(8193, 'a')), 501, "UnsupportedOperationException");
  EXPECT_EQ(Encrypt("xks-key-1", "x", std::string(8192, 'a')).status, 200);
  ExpectError(Call("/keys/xks-key-1/encrypt", {{"plaintext", B64("x")}, {"encryptionAlgorithm", "AES_GCM"}}), 400,
              "ValidationException");  // no requestMetadata
  ExpectError(Call("/keys/xks-key-1/encrypt",
                   {{"requestMetadata", Meta("Encrypt")}, {"plaintext", "not base64!"}, {"encryptionAlgorithm", "AES_GCM"}}),
              400, "ValidationException");
  ExpectError(Call("/keys/xks-key-1/encrypt",
                   {{"requestMetadata", Meta("Encrypt")}, {"plaintext", B64("x")}, {"encryptionAlgorithm", "RSA"}}),
              501, "UnsupportedOperationException");
}

TEST_F(XksE2eTest, PerKeyOperationsAndThePolicyRefuseWithTheirOwnErrors) {
  ExpectError(Encrypt("xks-decrypt-only", "x"), 400, "InvalidKeyUsageException");
  XksAnswer sealed = Encrypt("xks-encrypt-only", "x");
  ASSERT_EQ(sealed.status, 200) << sealed.raw;
  ExpectError(Decrypt("xks-encrypt-only", DecryptBody(sealed.body)), 400, "InvalidKeyUsageException");
  // A key the XKS identity is not granted (outside "xks-*").
  ExpectError(Encrypt("other-key", "x"), 403, "AccessDeniedException");
}

TEST_F(XksE2eTest, RoundTripsBeforeAndAfterAKeyRotationAndRetirementIsInvalidState) {
  XksAnswer before = Encrypt("xks-rotating", "before", "aad");
  ASSERT_EQ(before.status, 200) << before.raw;
  ASSERT_NO_FATAL_FAILURE(Rotate("xks-rotating"));
  XksAnswer after = Encrypt("xks-rotating", "after", "aad");
  ASSERT_EQ(after.status, 200) << after.raw;
  EXPECT_NE(before.body["ciphertextMetadata"], after.body["ciphertextMetadata"]);  // the key version
  EXPECT_EQ(Unb64(Decrypt("xks-rotating", DecryptBody(before.body, "aad")).body["plaintext"]), "before");
  EXPECT_EQ(Unb64(Decrypt("xks-rotating", DecryptBody(after.body, "aad")).body["plaintext"]), "after");
  ASSERT_NO_FATAL_FAILURE(Retire("xks-rotating", 2));
  ExpectError(Decrypt("xks-rotating", DecryptBody(before.body, "aad")), 400, "InvalidStateException");
  EXPECT_EQ(Decrypt("xks-rotating", DecryptBody(after.body, "aad")).status, 200);
}

TEST_F(XksE2eTest, AShreddedKeyIsDisabledAndInvalidState) {
  XksAnswer sealed = Encrypt("xks-shredded", "gone soon");
  ASSERT_EQ(sealed.status, 200);
  grpc::ClientContext ctx;
  e2e::Deadline(ctx);
  v1::ShredTenantRequest req;
  req.set_tenant_id("xks-shredded");
  req.set_confirm_tenant_id("xks-shredded");
  v1::ShredTenantResponse resp;
  ASSERT_TRUE(env().Admin()->ShredTenant(&ctx, req, &resp).ok());
  EXPECT_EQ(Call("/keys/xks-shredded/metadata", {{"requestMetadata", Meta("DescribeKey")}}).body["keyStatus"],
            "DISABLED");
  ExpectError(Encrypt("xks-shredded", "x"), 400, "InvalidStateException");
  ExpectError(Decrypt("xks-shredded", DecryptBody(sealed.body)), 400, "InvalidStateException");
}

TEST_F(XksE2eTest, RequestMetadataIsLoggedAndPlaintextNever) {
  const std::string secret_text = "do-not-log-this-plaintext-7f3a";
  Json body = {{"requestMetadata", Meta("GenerateDataKey", "req-id-5e1c-logged")},
               {"plaintext", B64(secret_text)},
               {"encryptionAlgorithm", "AES_GCM"}};
  XksAnswer a = Call("/keys/xks-key-1/encrypt", body);
  ASSERT_EQ(a.status, 200);
  XksAnswer opened = Decrypt("xks-key-1", DecryptBody(a.body));
  ASSERT_EQ(opened.status, 200);
  const std::string log = test::ReadFileOrEmpty(env().kmsd->log_path());
  // The request's line (JSON lines: src/common/log.h) carries the request metadata.
  bool found = false;
  for (const std::string& line : std::vector<std::string>(absl::StrSplit(log, '\n'))) {
    Json j = Json::parse(line, nullptr, false);
    if (!j.is_object() || j.value("event", "") != "xks_request") continue;
    const Json& f = j["fields"];
    if (f.value("kms_request_id", "") != "req-id-5e1c-logged" || f.value("operation", "") != "encrypt") continue;
    found = true;
    EXPECT_EQ(f.value("aws_principal_arn", ""), "arn:aws:iam::123456789012:user/Alice");
    EXPECT_EQ(f.value("kms_operation", ""), "GenerateDataKey");
    EXPECT_EQ(f.value("key", ""), "xks-key-1");
    EXPECT_EQ(f.value("access_key_id", ""), kKey1);
    EXPECT_EQ(j.value("request_id", ""), "req-id-5e1c-logged");  // the audit's request id
  }
  EXPECT_TRUE(found) << log.substr(log.size() > 4000 ? log.size() - 4000 : 0);
  EXPECT_EQ(log.find(secret_text), std::string::npos);
  EXPECT_EQ(log.find(B64(secret_text)), std::string::npos);
}

// ---------------------------------------------------------------- Kubernetes KMS v2

class K8sKmsE2eTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(DoorsEnv::Get().ok); }
  DoorsEnv& env() { return DoorsEnv::Get(); }

  Json Client(const std::string& args, const std::string& as_user = "") {
    std::string cmd = absl::StrCat(kPython, " ", KMS_K8S_CLIENT, " --stubs ", env().stubs, " --socket ",
                                   env().socket, " ", args);
    if (!as_user.empty()) cmd = absl::StrCat("runuser -u ", as_user, " -- ", cmd);
    auto r = RunCommand(cmd + " 2>&1");
    Json out = Json::parse(r.out, nullptr, false);
    EXPECT_TRUE(out.is_object()) << r.out;
    return out.is_object() ? out : Json{{"ok", false}, {"details", r.out}};
  }
  Json Status() { return Client("status"); }
  Json Encrypt(const std::string& plaintext) { return Client("encrypt --plaintext-b64 " + B64(plaintext)); }
  Json Decrypt(const std::string& ciphertext_b64, const std::string& key_id) {
    return Client(absl::StrCat("decrypt --ciphertext-b64 ", ciphertext_b64, " --key-id ", Quote(key_id)));
  }
};

TEST_F(K8sKmsE2eTest, StatusIsVersionTwoHealthyAndNamesTheCurrentKey) {
  Json s = Status();
  ASSERT_TRUE(s["ok"]) << s;
  EXPECT_EQ(s["version"], "v2");
  EXPECT_EQ(s["healthz"], "ok");
  EXPECT_THAT(s["key_id"].get<std::string>(), HasSubstr("k8s-secrets"));
}

TEST_F(K8sKmsE2eTest, EncryptAndDecryptRoundTripASeed) {
  const std::string seed(32, '\x5a');
  Json e = Encrypt(seed);
  ASSERT_TRUE(e["ok"]) << e;
  EXPECT_EQ(e["key_id"], Status()["key_id"]);
  EXPECT_LT(Unb64(e["ciphertext"]).size(), 1024u);
  EXPECT_NE(Unb64(e["ciphertext"]).find(seed), 0u);
  Json d = Decrypt(e["ciphertext"], e["key_id"]);
  ASSERT_TRUE(d["ok"]) << d;
  EXPECT_EQ(Unb64(d["plaintext"]), seed);
  // The key_id is checked against the ciphertext's key version.
  Json wrong = Decrypt(e["ciphertext"], "kmsd:k8s-secrets:v99");
  EXPECT_EQ(wrong["code"], "INVALID_ARGUMENT") << wrong;
}

TEST_F(K8sKmsE2eTest, ARotationChangesKeyIdAndOldCiphertextsDecryptUntilRetired) {
  Json old = Encrypt("old seed");
  ASSERT_TRUE(old["ok"]) << old;
  const std::string old_key = Status()["key_id"];
  EXPECT_EQ(old["key_id"], old_key);
  {
    grpc::ClientContext ctx;
    e2e::Deadline(ctx);
    v1::RotateTenantKeyRequest req;
    req.set_tenant_id("k8s-secrets");
    v1::RotateTenantKeyResponse resp;
    ASSERT_TRUE(env().Admin()->RotateTenantKey(&ctx, req, &resp).ok());
  }
  Json s = Status();
  EXPECT_EQ(s["healthz"], "ok");
  EXPECT_NE(s["key_id"], old_key);
  Json fresh = Encrypt("new seed");
  EXPECT_EQ(fresh["key_id"], s["key_id"]);
  EXPECT_EQ(Unb64(Decrypt(old["ciphertext"], old_key)["plaintext"]), "old seed");
  EXPECT_EQ(Unb64(Decrypt(fresh["ciphertext"], s["key_id"])["plaintext"]), "new seed");
  // Retire the old version: its ciphertexts stop decrypting, the new ones do not.
  const std::string version = old_key.substr(old_key.rfind(":v") + 2);
  {
    grpc::ClientContext ctx;
    e2e::Deadline(ctx);
    v1::SetMinDecryptVersionRequest req;
    req.set_tenant_id("k8s-secrets");
    req.set_min_decrypt_version(std::stoul(version) + 1);
    v1::SetMinDecryptVersionResponse resp;
    grpc::Status st = env().Admin()->SetMinDecryptVersion(&ctx, req, &resp);
    ASSERT_TRUE(st.ok()) << st.error_message();
  }
  EXPECT_EQ(Decrypt(old["ciphertext"], old_key)["code"], "FAILED_PRECONDITION");
  EXPECT_TRUE(Decrypt(fresh["ciphertext"], s["key_id"])["ok"]);
}

TEST_F(K8sKmsE2eTest, SizesAreBoundAsTheApiSays) {
  Json big = Encrypt(std::string(991, 'x'));  // its ciphertext would be 1024 bytes
  EXPECT_EQ(big["code"], "INVALID_ARGUMENT") << big;
  Json max = Encrypt(std::string(990, 'x'));
  ASSERT_TRUE(max["ok"]) << max;
  EXPECT_EQ(Unb64(max["ciphertext"]).size(), 1023u);
  Json empty_key = Decrypt(max["ciphertext"], "");
  EXPECT_EQ(empty_key["code"], "INVALID_ARGUMENT");
}

TEST_F(K8sKmsE2eTest, TheSocketsModeIsEnforcedByTheOsForOtherUsers) {
  struct stat st;
  ASSERT_EQ(stat(env().socket.c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  Json refused = Client("status", "nobody");
  EXPECT_FALSE(refused.value("ok", true)) << refused;
  EXPECT_EQ(refused.value("code", ""), "UNAVAILABLE") << refused;
  EXPECT_THAT(refused.value("details", ""), HasSubstr("Permission denied"));
  // The same user with the mode opened up is served: the mode was what refused it.
  ASSERT_EQ(chmod(env().socket.c_str(), 0666), 0);
  Json allowed = Client("status", "nobody");
  ASSERT_EQ(chmod(env().socket.c_str(), 0600), 0);
  EXPECT_TRUE(allowed.value("ok", false)) << allowed;
}

TEST_F(K8sKmsE2eTest, KmsdsOwnServicesAreNotServedOnTheSocket) {
  auto channel = grpc::CreateChannel("unix:" + env().socket, grpc::InsecureChannelCredentials());
  auto [status, bytes] = e2e::RawCall(channel, "/kms.v1.KeyService/Encrypt", "");
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNIMPLEMENTED);
  auto [admin, admin_bytes] = e2e::RawCall(channel, "/kms.v1.AdminService/ListTenants", "");
  EXPECT_EQ(admin.error_code(), grpc::StatusCode::UNIMPLEMENTED);
}

TEST_F(K8sKmsE2eTest, BothDoorsAreCountedInTheMetrics) {
  ASSERT_TRUE(Status()["ok"]);
  auto metrics = RunCommand(absl::StrCat("curl -sS --cacert ", env().state, "/pki/ca.pem https://localhost:",
                                         env().kmsd->http_port(), "/metrics"));
  EXPECT_THAT(metrics.out, HasSubstr(R"(kmsd_k8s_kms_requests_total{code="OK",method="Status"})"));
  EXPECT_THAT(metrics.out, HasSubstr(R"(kmsd_k8s_kms_request_duration_seconds_count{method="Encrypt"})"));
  EXPECT_THAT(metrics.out, HasSubstr(R"(kmsd_xks_requests_total{error="none",operation="encrypt"})"));
  EXPECT_THAT(metrics.out,
              HasSubstr(R"(kmsd_xks_requests_total{error="InvalidKeyUsageException",operation="decrypt"})"));
  EXPECT_THAT(metrics.out, HasSubstr(R"(kmsd_xks_request_duration_seconds_bucket{operation="health",le=)"));
}

TEST_F(K8sKmsE2eTest, BothDoorsCallsAreInTheAuditLog) {
  ASSERT_TRUE(Encrypt("audited seed")["ok"]);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  bool xks = false, k8s = false;
  while (!(xks && k8s) && std::chrono::steady_clock::now() < deadline) {
    grpc::ClientContext ctx;
    e2e::Deadline(ctx);
    v1::ReadAuditRequest req;
    req.set_tail(1000);
    v1::ReadAuditResponse resp;
    grpc::Status st = env().Admin()->ReadAudit(&ctx, req, &resp);
    ASSERT_TRUE(st.ok()) << st.error_message();
    for (const v1::AuditRecord& r : resp.records()) {
      if (r.operation() == "XksEncrypt:GenerateDataKey" &&
          r.identity() == "aws-kms-xks as arn:aws:iam::123456789012:user/Alice" &&
          r.tenant_id() == "xks-key-1" && r.outcome() == "OK" && r.kind() == "data") {
        xks = true;
      }
      if (r.operation() == "K8sKmsEncrypt" && r.identity() == "k8s-kms-plugin" &&
          r.tenant_id() == "k8s-secrets" && r.outcome() == "OK") {
        k8s = true;
      }
    }
    if (!(xks && k8s)) std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  EXPECT_TRUE(xks) << "no XKS encrypt record in the audit log";
  EXPECT_TRUE(k8s) << "no Kubernetes KMS encrypt record in the audit log";
}

}  // namespace
}  // namespace kms
