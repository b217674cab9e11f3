#include "src/config/config.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <limits>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace kms::config {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using Json = nlohmann::json;
namespace fs = std::filesystem;

std::string Message(const absl::Status& s) { return std::string(s.message()); }

void WriteFile(const fs::path& path, const std::string& text) {
  fs::create_directories(path.parent_path());
  std::ofstream(path) << text;
}

std::string Hostname() {
  char buf[256] = {};
  gethostname(buf, sizeof(buf) - 1);
  return buf;
}

// A temp dir holding every file a config names, and a complete valid config for it.
class ConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "kms_config_test.XXXXXX").string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    for (const char* name : {"tls/server.pem", "tls/server.key", "tls/clients-ca.pem",
                             "hsm/pin", "policy.json", "softhsm2.conf"}) {
      WriteFile(dir_ / name, "x");
    }
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string Path(const std::string& name) const { return (dir_ / name).string(); }

  Json FullConfig() const {
    return Json{
        {"node_id", "kms-1"},
        {"grpc", {{"listen", "0.0.0.0:9443"}}},
        {"http",
         {{"listen", "[::1]:9444"},
          {"max_connections", 100},
          {"max_connections_per_ip", 10},
          {"handshake_timeout_ms", 2000},
          {"header_timeout_ms", 3000},
          {"idle_timeout_ms", 4000},
          {"request_timeout_ms", 5000},
          {"max_header_bytes", 8192},
          {"max_body_bytes", 4096},
          {"worker_threads", 3},
          {"max_queued_requests", 7}}},
        {"tls",
         {{"cert_file", Path("tls/server.pem")},
          {"key_file", Path("tls/server.key")},
          {"client_ca_file", Path("tls/clients-ca.pem")}}},
        {"hsm",
         {{"module_path", "/usr/lib/softhsm/libsofthsm2.so"},
          {"token_label", "kmsd"},
          {"pin_file", Path("hsm/pin")},
          {"master_key_label", "master-2"},
          {"master_key_kind", "aes-256"},
          {"max_sessions", 8},
          {"softhsm2_conf", Path("softhsm2.conf")}}},
        {"store", {{"backend", "sqlite"}, {"sqlite", {{"path", Path("state/kmsd.db")}}}}},
        {"policy_file", Path("policy.json")},
        {"limits",
         {{"max_plaintext_bytes", 1024},
          {"max_batch_items", 50},
          {"max_context_pairs", 4},
          {"max_context_bytes", 512}}},
        {"dek_cache", {{"ttl_seconds", 60}, {"max_entries", 10}, {"usage_flush_min_count", 0},
                       {"usage_flush_max_age_seconds", 0}}},
        {"tenants", {{"auto_create", true}}},
        {"log_level", "debug"},
        {"lock_memory", false},
    };
  }

  // Only the required keys.
  Json MinimalConfig() const {
    return Json{
        {"tls",
         {{"cert_file", Path("tls/server.pem")},
          {"key_file", Path("tls/server.key")},
          {"client_ca_file", Path("tls/clients-ca.pem")}}},
        {"hsm", {{"token_label", "kmsd"}, {"pin_file", Path("hsm/pin")}}},
        {"store", {{"sqlite", {{"path", Path("kmsd.db")}}}}},
        {"policy_file", Path("policy.json")},
    };
  }

  absl::StatusOr<Config> Parse(const Json& j) const { return ParseConfig(j.dump(), dir_.string()); }

  // A config that differs from the minimal one at `pointer` (a JSON pointer).
  absl::StatusOr<Config> ParseWith(const std::string& pointer, const Json& value) const {
    Json j = MinimalConfig();
    j[Json::json_pointer(pointer)] = value;
    return Parse(j);
  }

  fs::path dir_;
};

TEST_F(ConfigTest, ValidFullConfigParsesWithTheRightValues) {
  absl::StatusOr<Config> c = Parse(FullConfig());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->node_id, "kms-1");
  EXPECT_EQ(c->grpc_listen, "0.0.0.0:9443");
  EXPECT_EQ(c->http_listen, "[::1]:9444");
  EXPECT_EQ(c->http.max_connections, 100);
  EXPECT_EQ(c->http.max_connections_per_ip, 10);
  EXPECT_EQ(c->http.handshake_timeout_ms, 2000);
  EXPECT_EQ(c->http.header_timeout_ms, 3000);
  EXPECT_EQ(c->http.idle_timeout_ms, 4000);
  EXPECT_EQ(c->http.request_timeout_ms, 5000);
  EXPECT_EQ(c->http.max_header_bytes, 8192);
  EXPECT_EQ(c->http.max_body_bytes, 4096);
  EXPECT_EQ(c->http.worker_threads, 3);
  EXPECT_EQ(c->http.max_queued_requests, 7);
  EXPECT_EQ(c->tls.cert_file, Path("tls/server.pem"));
  EXPECT_EQ(c->tls.key_file, Path("tls/server.key"));
  EXPECT_EQ(c->tls.client_ca_file, Path("tls/clients-ca.pem"));
  EXPECT_EQ(c->hsm.module_path, "/usr/lib/softhsm/libsofthsm2.so");
  EXPECT_EQ(c->hsm.token_label, "kmsd");
  EXPECT_EQ(c->hsm.pin_file, Path("hsm/pin"));
  EXPECT_EQ(c->hsm.master_key_label, "master-2");
  EXPECT_EQ(c->hsm.master_key_kind, "aes-256");
  EXPECT_EQ(c->hsm.max_sessions, 8);
  EXPECT_EQ(c->hsm.softhsm2_conf, Path("softhsm2.conf"));
  EXPECT_EQ(c->store.backend, "sqlite");
  EXPECT_EQ(c->store.sqlite_path, Path("state/kmsd.db"));
  EXPECT_EQ(c->policy_file, Path("policy.json"));
  EXPECT_EQ(c->limits.max_plaintext_bytes, 1024);
  EXPECT_EQ(c->limits.max_ciphertext_bytes, 1024 + 33);
  EXPECT_EQ(c->limits.max_batch_items, 50);
  EXPECT_EQ(c->limits.max_context_pairs, 4);
  EXPECT_EQ(c->limits.max_context_bytes, 512);
  EXPECT_EQ(c->dek_cache.ttl_seconds, 60);
  EXPECT_EQ(c->dek_cache.max_entries, 10);
  EXPECT_EQ(c->dek_cache.usage_flush_min_count, 0);
  EXPECT_EQ(c->dek_cache.usage_flush_max_age_seconds, 0);
  EXPECT_TRUE(c->tenants_auto_create);
  EXPECT_EQ(c->log_level, "debug");
  EXPECT_FALSE(c->lock_memory);
}

TEST_F(ConfigTest, OmittedKeysGetTheirDefaults) {
  absl::StatusOr<Config> c = Parse(MinimalConfig());
  ASSERT_TRUE(c.ok()) << c.status();
  const Config defaults;
  EXPECT_EQ(c->node_id, Hostname());
  EXPECT_EQ(c->grpc_listen, defaults.grpc_listen);
  EXPECT_EQ(c->http_listen, defaults.http_listen);
  EXPECT_EQ(c->http.max_connections, 256);
  EXPECT_EQ(c->http.max_connections_per_ip, 64);
  EXPECT_EQ(c->http.handshake_timeout_ms, 5000);
  EXPECT_EQ(c->http.header_timeout_ms, 10000);
  EXPECT_EQ(c->http.idle_timeout_ms, 60000);
  EXPECT_EQ(c->http.request_timeout_ms, 30000);
  EXPECT_EQ(c->http.max_header_bytes, 16384);
  EXPECT_EQ(c->http.max_body_bytes, 1 << 20);
  EXPECT_EQ(c->http.worker_threads, 2);
  EXPECT_EQ(c->http.max_queued_requests, 64);
  EXPECT_EQ(c->hsm.module_path, defaults.hsm.module_path);
  EXPECT_EQ(c->hsm.master_key_label, "kmsd-master");
  EXPECT_EQ(c->hsm.master_key_kind, "rsa-4096");
  EXPECT_EQ(c->hsm.max_sessions, 16);
  EXPECT_EQ(c->hsm.softhsm2_conf, "");
  EXPECT_EQ(c->store.backend, "sqlite");
  EXPECT_EQ(c->limits.max_plaintext_bytes, 64 * 1024);
  EXPECT_EQ(c->limits.max_ciphertext_bytes, 64 * 1024 + kCiphertextOverheadBytes);
  EXPECT_EQ(c->limits.max_batch_items, 1000);
  EXPECT_EQ(c->dek_cache.ttl_seconds, 3600);
  EXPECT_EQ(c->dek_cache.max_entries, 500000);
  EXPECT_EQ(c->dek_cache.usage_flush_min_count, 1000);
  EXPECT_EQ(c->dek_cache.usage_flush_max_age_seconds, 300);
  EXPECT_FALSE(c->tenants_auto_create);
  EXPECT_EQ(c->log_level, "info");
  EXPECT_TRUE(c->lock_memory);
}

TEST_F(ConfigTest, EachMissingRequiredKeyIsAnErrorNamingIt) {
  for (const std::string key : {"/tls/cert_file", "/tls/key_file", "/tls/client_ca_file",
                                "/hsm/token_label", "/hsm/pin_file", "/policy_file",
                                "/store/sqlite/path"}) {
    SCOPED_TRACE(key);
    Json j = MinimalConfig();
    Json::json_pointer ptr(key);
    j[ptr.parent_pointer()].erase(ptr.back());
    absl::StatusOr<Config> c = Parse(j);
    ASSERT_FALSE(c.ok());
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
    std::string dotted = key.substr(1);
    std::replace(dotted.begin(), dotted.end(), '/', '.');
    EXPECT_THAT(Message(c.status()), HasSubstr(dotted + ": required"));
  }
}

TEST_F(ConfigTest, EmptyRequiredStringCountsAsMissing) {
  absl::StatusOr<Config> c = ParseWith("/hsm/token_label", "");
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(Message(c.status()), HasSubstr("hsm.token_label: required"));
}

TEST_F(ConfigTest, UnknownKeyIsAnErrorNamingItsFullPath) {
  struct Case {
    std::string pointer;
    std::string expected;
  };
  for (const Case& tc : std::vector<Case>{{"/tls/cert", "unknown key 'tls.cert'"},
                                          {"/polcy_file", "unknown key 'polcy_file'"},
                                          {"/store/sqlite/file", "unknown key 'store.sqlite.file'"},
                                          {"/hsm/pin", "unknown key 'hsm.pin'"},
                                          {"/limits/max_ciphertext_bytes",
                                           "unknown key 'limits.max_ciphertext_bytes'"}}) {
    SCOPED_TRACE(tc.pointer);
    absl::StatusOr<Config> c = ParseWith(tc.pointer, "x");
    ASSERT_FALSE(c.ok());
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(Message(c.status()), HasSubstr(tc.expected));
  }
}

TEST_F(ConfigTest, WrongTypeIsAnErrorNamingTheKeyAndTheExpectedType) {
  struct Case {
    std::string pointer;
    Json value;
    std::string expected;
  };
  for (const Case& tc : std::vector<Case>{
           {"/limits/max_batch_items", "10", "limits.max_batch_items: expected an integer, got string"},
           {"/limits/max_plaintext_bytes", 1.5, "limits.max_plaintext_bytes: expected an integer"},
           {"/lock_memory", "yes", "lock_memory: expected a boolean"},
           {"/tenants/auto_create", 1, "tenants.auto_create: expected a boolean"},
           {"/node_id", 7, "node_id: expected a string, got number"},
           {"/hsm/max_sessions", nullptr, "hsm.max_sessions: expected an integer, got null"},
           {"/tls", "server.pem", "tls: expected an object, got string"},
           {"/grpc/listen", Json::array({"a"}), "grpc.listen: expected a string, got array"},
       }) {
    SCOPED_TRACE(tc.pointer);
    absl::StatusOr<Config> c = ParseWith(tc.pointer, tc.value);
    ASSERT_FALSE(c.ok());
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(Message(c.status()), HasSubstr(tc.expected));
  }
}

TEST_F(ConfigTest, BadListenAddressesAreRejected) {
  for (const std::string addr : {"8443", "localhost", ":8443", "localhost:", "host:65536",
                                 "host:-1", "host:84a3", "host:123456", "::1:8443", "[::1",
                                 "[::1]8443", "[zz]:1", "a b:80", "[]:80"}) {
    SCOPED_TRACE(addr);
    absl::StatusOr<Config> c = ParseWith("/grpc/listen", addr);
    ASSERT_FALSE(c.ok());
    EXPECT_THAT(Message(c.status()), HasSubstr("grpc.listen: "));
    c = ParseWith("/http/listen", addr);
    ASSERT_FALSE(c.ok());
    EXPECT_THAT(Message(c.status()), HasSubstr("http.listen: "));
  }
}

TEST_F(ConfigTest, GoodListenAddressesAreAccepted) {
  for (const std::string addr : {"0.0.0.0:0", "127.0.0.1:65535", "[::1]:8443", "[::]:1",
                                 "localhost:8443", "kms-1.internal:443"}) {
    SCOPED_TRACE(addr);
    absl::StatusOr<Config> c = ParseWith("/grpc/listen", addr);
    EXPECT_TRUE(c.ok()) << c.status();
  }
}

TEST_F(ConfigTest, EmptyHttpListenDisablesHttpsButEmptyGrpcListenIsAnError) {
  absl::StatusOr<Config> c = ParseWith("/http/listen", "");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->http_listen, "");
  c = ParseWith("/grpc/listen", "");
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(Message(c.status()), HasSubstr("grpc.listen: required"));
}

TEST_F(ConfigTest, SameListenAddressForGrpcAndHttpIsRejected) {
  Json j = MinimalConfig();
  j["grpc"]["listen"] = "127.0.0.1:9000";
  j["http"]["listen"] = "127.0.0.1:9000";
  absl::StatusOr<Config> c = Parse(j);
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(Message(c.status()), HasSubstr("http.listen: must differ from grpc.listen"));
}

TEST_F(ConfigTest, OutOfRangeValuesAreRejectedWithTheRange) {
  struct Case {
    std::string pointer;
    Json value;
    std::string expected;
  };
  for (const Case& tc : std::vector<Case>{
           {"/limits/max_plaintext_bytes", 0, "limits.max_plaintext_bytes: must be between 1 and 16777216, got 0"},
           {"/limits/max_plaintext_bytes", 16 * 1024 * 1024 + 1, "limits.max_plaintext_bytes: must be between"},
           {"/limits/max_batch_items", 0, "limits.max_batch_items: must be between 1 and 100000"},
           {"/limits/max_batch_items", 100001, "limits.max_batch_items: must be between"},
           {"/limits/max_batch_items", int64_t{1} << 40, "limits.max_batch_items: 1099511627776 is out of range"},
           {"/limits/max_context_pairs", -1, "limits.max_context_pairs: must be between"},
           {"/limits/max_context_bytes", 1 << 20, "limits.max_context_bytes: must be between"},
           {"/dek_cache/ttl_seconds", 0, "dek_cache.ttl_seconds: must be between 1 and 86400"},
           {"/dek_cache/ttl_seconds", 86401, "dek_cache.ttl_seconds: must be between"},
           {"/dek_cache/max_entries", 0, "dek_cache.max_entries: must be between 1 and"},
           {"/dek_cache/usage_flush_min_count", -1, "dek_cache.usage_flush_min_count: must be between 0 and"},
           {"/dek_cache/usage_flush_max_age_seconds", 86401, "dek_cache.usage_flush_max_age_seconds: must be between 0 and 86400"},
           {"/dek_cache/max_entries", uint64_t{1} << 63, "dek_cache.max_entries: 9223372036854775808 is out of range"},
           {"/hsm/max_sessions", 0, "hsm.max_sessions: must be between 1 and 1024"},
           {"/hsm/max_sessions", 1025, "hsm.max_sessions: must be between 1 and 1024"},
           {"/http/max_connections", 0, "http.max_connections: must be between 1 and 65536"},
           {"/http/max_connections_per_ip", 257, "http.max_connections_per_ip: must be between 1 and 256"},
           {"/http/handshake_timeout_ms", 99, "http.handshake_timeout_ms: must be between 100 and 60000"},
           {"/http/header_timeout_ms", 0, "http.header_timeout_ms: must be between 100 and"},
           {"/http/header_timeout_ms", 40000, "http.header_timeout_ms: must not exceed http.request_timeout_ms"},
           {"/http/idle_timeout_ms", 3600001, "http.idle_timeout_ms: must be between 100 and 3600000"},
           {"/http/request_timeout_ms", 600001, "http.request_timeout_ms: must be between 100 and 600000"},
           {"/http/max_header_bytes", 1023, "http.max_header_bytes: must be between 1024 and 1048576"},
           {"/http/max_body_bytes", -1, "http.max_body_bytes: must be between 0 and 67108864"},
           {"/http/worker_threads", 0, "http.worker_threads: must be between 1 and 64"},
           {"/http/max_queued_requests", 0, "http.max_queued_requests: must be between 1 and 100000"},
       }) {
    SCOPED_TRACE(tc.pointer + " = " + tc.value.dump());
    absl::StatusOr<Config> c = ParseWith(tc.pointer, tc.value);
    ASSERT_FALSE(c.ok());
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(Message(c.status()), HasSubstr(tc.expected));
  }
}

TEST_F(ConfigTest, RangeLimitsThemselvesAreAccepted) {
  Json j = MinimalConfig();
  j["limits"] = {{"max_plaintext_bytes", 16 * 1024 * 1024}, {"max_batch_items", 100000}};
  j["dek_cache"] = {{"ttl_seconds", 86400}, {"max_entries", 1}};
  j["hsm"]["max_sessions"] = 1024;
  absl::StatusOr<Config> c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->limits.max_ciphertext_bytes, 16 * 1024 * 1024 + 33);
}

TEST_F(ConfigTest, UnsupportedStoreBackendIsRejected) {
  absl::StatusOr<Config> c = ParseWith("/store/backend", "mysql");
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(Message(c.status()),
              HasSubstr("store.backend: 'mysql' is not supported (use sqlite"));
}

TEST_F(ConfigTest, MasterKeyKindMustBeRsa4096OrAes256) {
  EXPECT_TRUE(ParseWith("/hsm/master_key_kind", "rsa-4096").ok());
  EXPECT_TRUE(ParseWith("/hsm/master_key_kind", "aes-256").ok());
  absl::StatusOr<Config> c = ParseWith("/hsm/master_key_kind", "rsa-2048");
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(Message(c.status()),
              HasSubstr("hsm.master_key_kind: 'rsa-2048' must be one of rsa-4096, aes-256"));
}

TEST_F(ConfigTest, UnknownLogLevelIsRejected) {
  absl::StatusOr<Config> c = ParseWith("/log_level", "verbose");
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(Message(c.status()), HasSubstr("log_level: 'verbose' must be one of"));
}

TEST_F(ConfigTest, TokenLabelLongerThan32BytesIsRejected) {
  absl::StatusOr<Config> c = ParseWith("/hsm/token_label", std::string(33, 'a'));
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(Message(c.status()), HasSubstr("hsm.token_label: at most 32 bytes"));
}

TEST_F(ConfigTest, MissingFilesAreReportedWithKeyPathAndReason) {
  for (const std::string key : {"/tls/cert_file", "/tls/key_file", "/tls/client_ca_file",
                                "/hsm/pin_file", "/policy_file"}) {
    SCOPED_TRACE(key);
    absl::StatusOr<Config> c = ParseWith(key, "/nonexistent/x/y");
    ASSERT_FALSE(c.ok());
    std::string dotted = key.substr(1);
    std::replace(dotted.begin(), dotted.end(), '/', '.');
    EXPECT_THAT(Message(c.status()),
                HasSubstr(dotted + ": cannot read /nonexistent/x/y: No such file or directory"));
  }
}

TEST_F(ConfigTest, ADirectoryWhereAFileBelongsIsRejected) {
  absl::StatusOr<Config> c = ParseWith("/policy_file", dir_.string());
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(Message(c.status()), HasSubstr("policy_file: cannot read " + dir_.string() +
                                             ": not a regular file"));
}

TEST_F(ConfigTest, AllProblemsAreReportedAtOnce) {
  Json j = MinimalConfig();
  j["limits"]["max_batch_items"] = 0;
  j["dek_cache"]["ttl_seconds"] = 0;
  absl::StatusOr<Config> c = Parse(j);
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(Message(c.status()), HasSubstr("limits.max_batch_items"));
  EXPECT_THAT(Message(c.status()), HasSubstr("dek_cache.ttl_seconds"));
}

TEST_F(ConfigTest, RelativePathsResolveAgainstTheConfigFilesDirectory) {
  Json j = FullConfig();
  j["tls"] = {{"cert_file", "tls/server.pem"},
              {"key_file", "./tls/server.key"},
              {"client_ca_file", "tls/../tls/clients-ca.pem"}};
  j["hsm"]["pin_file"] = "hsm/pin";
  j["hsm"]["softhsm2_conf"] = "softhsm2.conf";
  j["hsm"]["module_path"] = "libsofthsm2.so";  // a bare name is for the loader: unchanged
  j["policy_file"] = "policy.json";
  j["store"]["sqlite"]["path"] = "state/kmsd.db";
  WriteFile(dir_ / "kmsd.json", j.dump(2));

  // Loaded from another working directory, relative paths still find the files.
  absl::StatusOr<Config> c = LoadConfigFile(Path("kmsd.json"));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->tls.cert_file, Path("tls/server.pem"));
  EXPECT_EQ(c->tls.key_file, Path("tls/server.key"));
  EXPECT_EQ(c->tls.client_ca_file, Path("tls/clients-ca.pem"));
  EXPECT_EQ(c->hsm.pin_file, Path("hsm/pin"));
  EXPECT_EQ(c->hsm.softhsm2_conf, Path("softhsm2.conf"));
  EXPECT_EQ(c->hsm.module_path, "libsofthsm2.so");
  EXPECT_EQ(c->policy_file, Path("policy.json"));
  EXPECT_EQ(c->store.sqlite_path, Path("state/kmsd.db"));
}

TEST_F(ConfigTest, MissingConfigFileIsNotFound) {
  absl::StatusOr<Config> c = LoadConfigFile(Path("nope.json"));
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(Message(c.status()), HasSubstr("nope.json"));
}

TEST_F(ConfigTest, ErrorsFromAFileNameTheFile) {
  Json j = MinimalConfig();
  j["tls"]["cert"] = "x";
  WriteFile(dir_ / "kmsd.json", j.dump());
  absl::StatusOr<Config> c = LoadConfigFile(Path("kmsd.json"));
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(Message(c.status()), HasSubstr(Path("kmsd.json") + ": unknown key 'tls.cert'"));
}

TEST_F(ConfigTest, InvalidJsonIsAnErrorWithItsPosition) {
  absl::StatusOr<Config> c = ParseConfig("{\n  \"node_id\": \"a\",\n  oops\n}", dir_.string());
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(c.status()), HasSubstr("not valid JSON"));
  EXPECT_THAT(Message(c.status()), HasSubstr("line 3"));
  EXPECT_THAT(Message(c.status()), Not(HasSubstr("json.exception")));
}

TEST_F(ConfigTest, NonObjectTopLevelIsRejected) {
  for (const char* text : {"[]", "42", "\"x\"", "null", ""}) {
    SCOPED_TRACE(text);
    absl::StatusOr<Config> c = ParseConfig(text, dir_.string());
    ASSERT_FALSE(c.ok());
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  }
}

TEST_F(ConfigTest, DuplicateKeysAreRejected) {
  std::string text = MinimalConfig().dump();
  text.insert(1, "\"log_level\": \"info\", \"log_level\": \"debug\", ");
  absl::StatusOr<Config> c = ParseConfig(text, dir_.string());
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(Message(c.status()), HasSubstr("duplicate key 'log_level'"));
}

TEST_F(ConfigTest, DeeplyNestedJsonIsRejected) {
  std::string text = std::string(100, '[') + std::string(100, ']');
  absl::StatusOr<Config> c = ParseConfig("{\"x\": " + text + "}", dir_.string());
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(ConfigTest, ValidateConfigChecksAConfigBuiltInCode) {
  Config c;
  c.node_id = "dev";
  c.tls = {Path("tls/server.pem"), Path("tls/server.key"), Path("tls/clients-ca.pem")};
  c.hsm.token_label = "kmsd-dev";
  c.hsm.pin_file = Path("hsm/pin");
  c.store.sqlite_path = Path("kmsd.db");
  c.policy_file = Path("policy.json");
  EXPECT_TRUE(ValidateConfig(c).ok()) << ValidateConfig(c);

  c.limits.max_plaintext_bytes = 100;  // without re-deriving max_ciphertext_bytes
  EXPECT_THAT(Message(ValidateConfig(c)),
              HasSubstr("limits.max_ciphertext_bytes: must be max_plaintext_bytes + 33"));
  c.limits.max_ciphertext_bytes = 133;
  EXPECT_TRUE(ValidateConfig(c).ok());

  c.node_id.clear();
  EXPECT_THAT(Message(ValidateConfig(c)), HasSubstr("node_id: must not be empty"));
}

// The shipped example is complete: every key the loader knows, no unknown key, and
// it is only its /etc and /var paths (absent here) that fail validation.
TEST(ExampleConfigTest, ExampleHasEveryKeyAndNoUnknownOne) {
  std::ifstream in(KMS_EXAMPLE_CONFIG);
  ASSERT_TRUE(in) << KMS_EXAMPLE_CONFIG;
  std::stringstream text;
  text << in.rdbuf();
  Json example = Json::parse(text.str());
  Json flat = example.flatten();
  for (const char* key :
       {"/node_id", "/grpc/listen", "/http/listen", "/tls/cert_file", "/tls/key_file",
        "/http/max_connections", "/http/max_connections_per_ip", "/http/handshake_timeout_ms",
        "/http/header_timeout_ms", "/http/idle_timeout_ms", "/http/request_timeout_ms",
        "/http/max_header_bytes", "/http/max_body_bytes", "/http/worker_threads",
        "/http/max_queued_requests", "/tls/client_ca_file", "/hsm/module_path", "/hsm/token_label", "/hsm/pin_file",
        "/hsm/master_key_label", "/hsm/master_key_kind", "/hsm/max_sessions",
        "/hsm/softhsm2_conf", "/store/backend", "/store/sqlite/path", "/policy_file",
        "/limits/max_plaintext_bytes", "/limits/max_batch_items", "/limits/max_context_pairs",
        "/limits/max_context_bytes", "/dek_cache/ttl_seconds", "/dek_cache/max_entries",
        "/tenants/auto_create", "/log_level", "/lock_memory", "/redis/addr",
        "/redis/password_file", "/redis/connect_timeout_ms", "/redis/command_timeout_ms",
        "/cluster/poll_interval_seconds", "/jwt/issuer", "/jwt/max_ttl_seconds",
        "/jwt/clock_skew_seconds", "/jwt/jwks_cache_seconds", "/jwt/rotation_period_seconds",
        "/jwt/key_max_age_seconds", "/jwt/fail_closed_when_critical", "/jwt/max_claims_bytes",
        "/rotation/check_interval_seconds", "/rotation/kek_period_seconds",
        "/rotation/dek_period_seconds", "/rotation/dek_rotations_per_check",
        "/rotation/rewrap_rate_per_second", "/rotation/rewrap_batch_size",
        "/rotation/rewrap_parallelism", "/rotation/retired_kek_keep_days",
        "/hsm/serialize_calls", "/backends/request_threads", "/backends/request_queue",
        "/backends/threads", "/backends/max_queue",
        "/backends/call_timeout_ms", "/backends/open_initial_ms", "/backends/open_max_ms"}) {
    EXPECT_TRUE(flat.contains(key)) << key;
  }

  std::ifstream readme_in(KMS_CONFIG_README);
  std::stringstream readme;
  readme << readme_in.rdbuf();
  for (const auto& [pointer, value] : flat.items()) {
    std::string dotted = pointer.substr(1);
    std::replace(dotted.begin(), dotted.end(), '/', '.');
    EXPECT_THAT(readme.str(), HasSubstr("`" + dotted + "`")) << "README lacks " << dotted;
  }

  absl::StatusOr<Config> c = ParseConfig(text.str(), "/etc/kmsd");
  if (!c.ok()) {
    EXPECT_THAT(Message(c.status()), Not(HasSubstr("unknown key")));
    EXPECT_THAT(Message(c.status()), Not(HasSubstr("expected")));
    EXPECT_THAT(Message(c.status()), Not(HasSubstr("must")));
  }
}

TEST(ClusterExampleConfigTest, ClusterExampleUsesPostgresAndRedisWithEveryTheirKey) {
  std::ifstream in(KMS_CLUSTER_EXAMPLE_CONFIG);
  ASSERT_TRUE(in) << KMS_CLUSTER_EXAMPLE_CONFIG;
  std::stringstream text;
  text << in.rdbuf();
  Json flat = Json::parse(text.str()).flatten();
  EXPECT_EQ(flat["/store/backend"], "postgres");
  for (const char* key : {"/store/postgres/conninfo", "/store/postgres/password_file",
                          "/store/postgres/sslmode", "/store/postgres/sslrootcert",
                          "/store/postgres/pool_size", "/store/postgres/schema", "/redis/addr"}) {
    EXPECT_TRUE(flat.contains(key)) << key;
  }
  absl::StatusOr<Config> c = ParseConfig(text.str(), "/etc/kmsd");
  if (!c.ok()) {
    EXPECT_THAT(Message(c.status()), Not(HasSubstr("unknown key")));
    EXPECT_THAT(Message(c.status()), Not(HasSubstr("expected")));
    EXPECT_THAT(Message(c.status()), Not(HasSubstr("must")));
  }
}

TEST_F(ConfigTest, PostgresBackendNeedsAConninfoWithoutPassword) {
  absl::StatusOr<Config> c = ParseWith("/store/backend", "postgres");
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(Message(c.status()), HasSubstr("store.postgres.conninfo: required"));
}

TEST_F(ConfigTest, RedisAddressMustBeHostPortOrUnixPath) {
  EXPECT_TRUE(ParseWith("/redis/addr", "127.0.0.1:6379").ok());
  EXPECT_TRUE(ParseWith("/redis/addr", "unix:/run/redis.sock").ok());
  absl::StatusOr<Config> c = ParseWith("/redis/addr", "unix:relative.sock");
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(Message(c.status()), HasSubstr("redis.addr"));
}

TEST_F(ConfigTest, JwtLifetimesAreRangeChecked) {
  absl::StatusOr<Config> c = ParseWith("/jwt/max_ttl_seconds", 0);
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(Message(c.status()), HasSubstr("jwt.max_ttl_seconds"));
}

}  // namespace
}  // namespace kms::config

namespace kms::config {
namespace {

// Found by the fuzz corpus: the derived ciphertext limit once overflowed int64.
TEST(ConfigOverflowTest, HugePlaintextLimitIsRejectedWithoutOverflow) {
  Config c;
  c.limits.max_plaintext_bytes = std::numeric_limits<int64_t>::max();
  absl::Status s = ValidateConfig(c);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(std::string(s.message()).find("limits.max_plaintext_bytes"), std::string::npos);
  EXPECT_EQ(std::string(s.message()).find("limits.max_ciphertext_bytes"), std::string::npos);
}

TEST_F(ConfigTest, XksAndK8sKmsSectionsParseWithRelativePathsResolved) {
  Json j = MinimalConfig();
  j["xks"] = {{"listen", "127.0.0.1:9445"},
              {"tls", {{"cert_file", Path("tls/server.pem")}, {"key_file", Path("tls/server.key")}}},
              {"uri_prefix", "/keystores/abc-1"},
              {"region", "eu-west-1"},
              {"credentials",
               {{{"access_key_id", "AKIAI2SFODNN7EXAMPLE"}, {"secret_access_key_file", Path("hsm/pin")}},
                {{"access_key_id", "HGIE2BUAFNDMBCMSQVWLGCEXAMPLE"}, {"secret_access_key_file", Path("hsm/pin")}}}},
              {"identity", "aws-kms"},
              {"deadline_ms", 120},
              {"http", {{"worker_threads", 4}}}};
  j["k8s_kms"] = {{"socket_path", "/run/kmsd/kms.sock"}, {"socket_mode", "0660"}, {"key", "k8s"}};
  absl::StatusOr<Config> c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->xks.listen, "127.0.0.1:9445");
  EXPECT_EQ(c->xks.uri_prefix, "/keystores/abc-1");
  EXPECT_EQ(c->xks.region, "eu-west-1");
  ASSERT_EQ(c->xks.credentials.size(), 2u);
  EXPECT_EQ(c->xks.credentials[1].access_key_id, "HGIE2BUAFNDMBCMSQVWLGCEXAMPLE");
  EXPECT_EQ(c->xks.identity, "aws-kms");
  EXPECT_EQ(c->xks.deadline_ms, 120);
  EXPECT_EQ(c->xks.max_clock_skew_seconds, 300);
  EXPECT_EQ(c->xks.http.worker_threads, 4);
  EXPECT_EQ(c->xks.http.max_body_bytes, 64 * 1024);
  EXPECT_EQ(c->k8s_kms.socket_mode, "0660");
  EXPECT_EQ(c->k8s_kms.identity, "k8s-kms-plugin");
  // Both are off unless configured.
  absl::StatusOr<Config> minimal = Parse(MinimalConfig());
  ASSERT_TRUE(minimal.ok());
  EXPECT_TRUE(minimal->xks.listen.empty());
  EXPECT_TRUE(minimal->k8s_kms.socket_path.empty());
}

TEST_F(ConfigTest, XksAndK8sKmsMistakesAreNamed) {
  Json j = MinimalConfig();
  j["xks"] = {{"listen", "127.0.0.1:9445"},
              {"tls", {{"cert_file", Path("tls/server.pem")}, {"key_file", Path("tls/server.key")}}},
              {"uri_prefix", "keystores/"},
              {"credentials",
               {{{"access_key_id", "lowercase-id"}, {"secret_access_key_file", Path("absent")}},
                {{"access_key_id", "lowercase-id"}, {"secret_access_key_file", Path("hsm/pin")}},
                {{"access_key_id", "AKIAI2SFODNN7EXAMPLE"}, {"secret_access_key_file", Path("hsm/pin")}}}},
              {"deadline_ms", 400},
              {"client_common_name", "cks.kms.eu-west-1.amazonaws.com"}};
  j["k8s_kms"] = {{"socket_path", "relative.sock"}, {"socket_mode", "600"}};
  const std::string m = Message(Parse(j).status());
  for (const char* part : {"xks.uri_prefix", "xks.credentials: one or two", "xks.credentials[0].access_key_id",
                           "xks.credentials[0].secret_access_key_file", "xks.credentials[1].access_key_id: is listed twice",
                           "xks.deadline_ms", "xks.client_common_name", "k8s_kms.socket_path",
                           "k8s_kms.socket_mode", "k8s_kms.key"}) {
    EXPECT_THAT(m, HasSubstr(part));
  }
  EXPECT_THAT(Message(ParseWith("/xks/unknown", 1).status()), HasSubstr("unknown key 'xks.unknown'"));
}

}  // namespace
}  // namespace kms::config
