#include "src/dev/dev_mode.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "spdlog/spdlog.h"
#include "src/common/base64.h"
#include "src/crypto/aes_gcm.h"
#include "src/dev/dev_pki.h"
#include "src/hsm/pkcs11_hsm.h"

namespace kms::dev {

namespace fs = std::filesystem;

namespace {

constexpr int kCertDays = 825;

absl::Status MakeDir(const fs::path& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return absl::FailedPreconditionError(absl::StrCat("cannot create ", dir.string(), ": ", ec.message()));
  fs::permissions(dir, fs::perms::owner_all, fs::perm_options::replace, ec);
  return absl::OkStatus();
}

std::span<const uint8_t> Bytes(std::string_view s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

// A PIN of 32 hex characters from the CSPRNG, as the bytes of the pin file.
absl::StatusOr<SecretBytes> NewPin() {
  KMS_ASSIGN_OR_RETURN(SecretBytes raw, crypto::RandomSecret(16));
  static constexpr char kHex[] = "0123456789abcdef";
  SecretBytes pin(32);
  for (size_t i = 0; i < raw.size(); ++i) {
    pin.data()[2 * i] = static_cast<uint8_t>(kHex[raw.data()[i] >> 4]);
    pin.data()[2 * i + 1] = static_cast<uint8_t>(kHex[raw.data()[i] & 0xf]);
  }
  return pin;
}

absl::Status EnsureToken(const fs::path& dir, config::HsmConfig& hsm) {
  const fs::path conf = dir / "softhsm2.conf";
  const fs::path tokens = dir / "tokens";
  const fs::path secrets = dir / "secrets";
  KMS_RETURN_IF_ERROR(MakeDir(tokens));
  KMS_RETURN_IF_ERROR(MakeDir(secrets));
  if (!fs::exists(conf)) {
    std::string text = absl::StrCat("# SoftHSM2 token of this kmsd dev state dir\n",
                                    "directories.tokendir = ", tokens.string(), "\n",
                                    "objectstore.backend = file\n", "log.level = ERROR\n",
                                    "slots.removable = false\n");
    KMS_RETURN_IF_ERROR(WriteFileAtomic(conf.string(), Bytes(text), 0600));
  }
  hsm.softhsm2_conf = conf.string();
  hsm.token_label = kDevTokenLabel;
  hsm.pin_file = (secrets / "hsm-user.pin").string();
  setenv("SOFTHSM2_CONF", hsm.softhsm2_conf.c_str(), 1);
  if (fs::exists(hsm.pin_file)) return absl::OkStatus();

  KMS_ASSIGN_OR_RETURN(SecretBytes so_pin, NewPin());
  KMS_ASSIGN_OR_RETURN(SecretBytes user_pin, NewPin());
  KMS_RETURN_IF_ERROR(hsm::Pkcs11Hsm::InitToken(hsm.module_path, kDevTokenLabel, so_pin, user_pin));
  KMS_RETURN_IF_ERROR(WriteFileAtomic((secrets / "hsm-so.pin").string(), so_pin.span(), 0600));
  // The user PIN file is written last: its presence marks a finished token set-up.
  KMS_RETURN_IF_ERROR(WriteFileAtomic(hsm.pin_file, user_pin.span(), 0600));
  spdlog::info("initialized SoftHSM2 token '{}' in {}", kDevTokenLabel, tokens.string());
  return absl::OkStatus();
}

absl::Status EnsurePki(const fs::path& dir, config::TlsConfig& tls) {
  const fs::path pki = dir / "pki";
  KMS_RETURN_IF_ERROR(MakeDir(pki / "clients"));
  const fs::path ca_cert = pki / "ca.pem", ca_key = pki / "ca.key";
  if (!fs::exists(ca_cert) || !fs::exists(ca_key)) {
    KMS_ASSIGN_OR_RETURN(IssuedCert ca, CreateCa("kmsd dev CA", 3650));
    KMS_RETURN_IF_ERROR(WriteIssued(ca, ca_cert.string(), ca_key.string()));
  }
  tls.cert_file = (pki / "server.pem").string();
  tls.key_file = (pki / "server.key").string();
  tls.client_ca_file = ca_cert.string();
  if (!fs::exists(tls.cert_file) || !fs::exists(tls.key_file)) {
    KMS_ASSIGN_OR_RETURN(IssuedCert ca, LoadIssued(ca_cert.string(), ca_key.string()));
    KMS_ASSIGN_OR_RETURN(IssuedCert server,
                         IssueServerCert(ca, {"localhost"}, {"127.0.0.1", "::1"}, kCertDays));
    KMS_RETURN_IF_ERROR(WriteIssued(server, tls.cert_file, tls.key_file));
  }
  for (const char* name : {"operator", "billing", "iam"}) {
    if (!fs::exists(pki / "clients" / absl::StrCat(name, ".pem"))) {
      KMS_RETURN_IF_ERROR(IssueDevClientCert(dir.string(), name).status());
    }
  }
  return absl::OkStatus();
}

absl::Status EnsurePolicy(const fs::path& path) {
  if (fs::exists(path)) return absl::OkStatus();
  const std::string td = kDevTrustDomain;
  nlohmann::json policy = {
      {"version", 1},
      {"identities",
       nlohmann::json::array(
           {{{"identity", "spiffe://" + td + "/operator"},
             {"operations", {"*"}},
             {"tenants", {"*"}}},
            {{"identity", "spiffe://" + td + "/billing"},
             {"operations", {"encrypt", "decrypt", "reencrypt"}},
             {"tenants", {"*"}},
             {"rate_limit", {{"requests_per_second", 5000}, {"burst", 10000}}}},
            {{"identity", "spiffe://" + td + "/iam"},
             {"operations", {"sign_jwt", "verify_jwt"}},
             {"tenants", nlohmann::json::array()}}})}};
  return WriteFileAtomic(path.string(), Bytes(policy.dump(2) + "\n"), 0644);
}

}  // namespace

absl::StatusOr<config::Config> PrepareDevState(const DevOptions& options) {
  if (options.state_dir.empty()) return absl::InvalidArgumentError("--state-dir is required with --dev");
  const fs::path dir = fs::absolute(options.state_dir);
  KMS_RETURN_IF_ERROR(MakeDir(dir));

  config::Config config;
  // Unique per process: replicas sharing a state dir must tell their events apart.
  config.node_id = absl::StrCat("dev-", getpid());
  config.jwt.issuer = absl::StrCat("https://", kDevTrustDomain);
  config.grpc_listen = options.grpc_listen;
  config.http_listen = options.http_listen;
  config.store.backend = "sqlite";
  config.store.sqlite_path = (dir / "kmsd.db").string();
  if (!options.postgres_conninfo.empty()) {
    config.store.backend = "postgres";
    config.store.postgres.conninfo = options.postgres_conninfo;
    config.store.postgres.password_file = options.postgres_password_file;
  }
  config.redis.addr = options.redis_addr;
  config.cluster.poll_interval_seconds = options.poll_interval_seconds;
  config.policy_file = (dir / "policy.json").string();
  // Dev machines and CI containers often forbid mlock beyond a small limit.
  config.lock_memory = true;

  KMS_RETURN_IF_ERROR(EnsureToken(dir, config.hsm));
  KMS_RETURN_IF_ERROR(EnsurePki(dir, config.tls));
  KMS_RETURN_IF_ERROR(EnsurePolicy(config.policy_file));
  KMS_RETURN_IF_ERROR(config::ValidateConfig(config));
  return config;
}

absl::StatusOr<std::string> IssueDevClientCert(const std::string& state_dir, const std::string& name) {
  if (name.empty() || name.size() > 64 ||
      name.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789-_.") != std::string::npos) {
    return absl::InvalidArgumentError("client name must be 1-64 of [a-z0-9._-]");
  }
  const fs::path pki = fs::absolute(state_dir) / "pki";
  KMS_ASSIGN_OR_RETURN(IssuedCert ca,
                       LoadIssued((pki / "ca.pem").string(), (pki / "ca.key").string()));
  KMS_ASSIGN_OR_RETURN(
      IssuedCert client,
      IssueClientCert(ca, name, absl::StrCat("spiffe://", kDevTrustDomain, "/", name), kCertDays));
  const fs::path cert = pki / "clients" / (name + ".pem");
  KMS_RETURN_IF_ERROR(WriteIssued(client, cert.string(), (pki / "clients" / (name + ".key")).string()));
  return cert.string();
}

absl::Status WriteKmsctlConfig(const std::string& state_dir, const std::string& grpc_addr) {
  const fs::path dir = fs::absolute(state_dir);
  nlohmann::json j = {{"addr", grpc_addr},
                      {"ca", (dir / "pki" / "ca.pem").string()},
                      {"cert", (dir / "pki" / "clients" / "operator.pem").string()},
                      {"key", (dir / "pki" / "clients" / "operator.key").string()}};
  return WriteFileAtomic((dir / "kmsctl.json").string(), Bytes(j.dump(2) + "\n"), 0644);
}

absl::StatusOr<std::string> RunIssueClientCert(const std::string& state_dir,
                                               const std::string& name) {
  KMS_ASSIGN_OR_RETURN(std::string cert, IssueDevClientCert(state_dir, name));
  return absl::StrCat("issued ", cert, " (key beside it) for spiffe://", kDevTrustDomain, "/", name,
                      "\nadd the identity to ", state_dir, "/policy.json to grant it operations\n");
}

std::string OnDevNodeListening(const std::string& state_dir, const std::string& grpc_addr) {
  absl::Status written = WriteKmsctlConfig(state_dir, grpc_addr);
  if (!written.ok()) {
    spdlog::warn("could not write kmsctl.json: {}", std::string(written.message()));
  }
  return absl::StrCat("point kmsctl at it: export KMSCTL_CONFIG=", fs::absolute(state_dir).string(),
                      "/kmsctl.json\n");
}

std::string HostOf(const std::string& listen) {
  size_t colon = listen.rfind(':');
  std::string host = colon == std::string::npos ? listen : listen.substr(0, colon);
  if (host.empty() || host == "0.0.0.0") return "127.0.0.1";
  if (host == "[::]") return "[::1]";
  return host;
}

}  // namespace kms::dev
