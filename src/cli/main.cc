// kmsctl: the operators' command line for kmsd.
//
// Connection settings come from, in increasing precedence: the file named by
// KMSCTL_CONFIG or --config (dev mode writes DIR/kmsctl.json), then
// --addr/--ca/--cert/--client-key.
//
// The key a data command uses is chosen with --tenant T (a tenant's DEKs) or --key NAME
// (a named platform key such as "backup"), one of the two.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <thread>
#include <iostream>
#include <iterator>
#include <mutex>
#include <optional>
#include <sstream>
#include <thread>
#include <vector>

#include "CLI/CLI.hpp"
#include "grpcpp/grpcpp.h"
#include "kms/v1/admin_service.grpc.pb.h"
#include "kms/v1/key_service.grpc.pb.h"
#include "nlohmann/json.hpp"
#include "openssl/crypto.h"
#include "src/cli/key_views.h"
#include "src/audit/audit_chain.h"
#include "src/cli/secret_files.h"
#include "src/common/base64.h"
#include "src/crypto/file_stream.h"

namespace {

using nlohmann::json;

struct Connection {
  std::string addr, ca, cert, key;
  int timeout_seconds = 10;
};

struct Failure {
  int exit_code;
  std::string message;
};

std::string ReadFile(const std::string& path, const char* what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Failure{2, std::string("cannot read ") + what + " " + path};
  return std::string(std::istreambuf_iterator<char>(in), {});
}

std::string ReadStdin() {
  return std::string(std::istreambuf_iterator<char>(std::cin), {});
}

// Flags win over the file; the file comes from --config, else KMSCTL_CONFIG.
Connection Resolve(const Connection& flags, std::string config_path) {
  if (config_path.empty()) {
    if (const char* env = std::getenv("KMSCTL_CONFIG")) config_path = env;
  }
  Connection c;
  if (!config_path.empty()) {
    json j;
    try {
      j = json::parse(ReadFile(config_path, "config"));
      c.addr = j.value("addr", "");
      c.ca = j.value("ca", "");
      c.cert = j.value("cert", "");
      c.key = j.value("key", "");
    } catch (const json::exception& e) {
      throw Failure{2, "config " + config_path + " is not valid JSON: " + e.what()};
    }
  }
  if (!flags.addr.empty()) c.addr = flags.addr;
  if (!flags.ca.empty()) c.ca = flags.ca;
  if (!flags.cert.empty()) c.cert = flags.cert;
  if (!flags.key.empty()) c.key = flags.key;
  c.timeout_seconds = flags.timeout_seconds;
  if (c.addr.empty() || c.ca.empty() || c.cert.empty() || c.key.empty()) {
    throw Failure{2, "no connection settings: pass --addr, --ca, --cert and --client-key, or --config FILE "
                     "(or set KMSCTL_CONFIG; kmsd --dev writes STATE_DIR/kmsctl.json)"};
  }
  return c;
}

std::shared_ptr<grpc::Channel> Dial(const Connection& c) {
  grpc::SslCredentialsOptions tls;
  tls.pem_root_certs = ReadFile(c.ca, "CA file");
  tls.pem_cert_chain = ReadFile(c.cert, "client certificate");
  tls.pem_private_key = ReadFile(c.key, "client key");
  return grpc::CreateChannel(c.addr, grpc::SslCredentials(tls));
}

// What an operator can do about a failed call, by its code.
std::string WhatToDo(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::UNAVAILABLE:
      return "\n  kmsd or one of its backends cannot be reached: check --addr, then `kmsctl status` "
             "and the kmsd log; retry with backoff";
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return "\n  kmsd did not answer in time: check the node (`kmsctl status`) or raise --timeout";
    case grpc::StatusCode::PERMISSION_DENIED:
      return "\n  the policy does not grant this identity that operation: ask for a grant in the "
             "policy file (docs/api.md lists each RPC's operation)";
    case grpc::StatusCode::UNAUTHENTICATED:
      return "\n  the TLS handshake failed: check --cert/--key and that kmsd trusts their CA";
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return "\n  rate limited: retry after the time given";
    case grpc::StatusCode::INTERNAL:
      return "\n  kmsd logged the detail under this call's request id: check the kmsd log";
    default:
      return "";
  }
}

// "2026-01-02T03:04:05Z" (RFC 3339, UTC).
std::string Rfc3339(int64_t unix_seconds) {
  std::time_t t = static_cast<std::time_t>(unix_seconds);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

// "3 d 4 h", "5 min 2 s", ...: the two largest units.
std::string Span(int64_t seconds) {
  static constexpr std::pair<int64_t, const char*> kUnits[] = {
      {86400, "d"}, {3600, "h"}, {60, "min"}, {1, "s"}};
  std::string out;
  int shown = 0;
  for (const auto& [size, name] : kUnits) {
    if (seconds >= size || (size == 1 && shown == 0)) {
      out += (out.empty() ? "" : " ") + std::to_string(seconds / size) + " " + name;
      seconds %= size;
      if (++shown == 2) break;
    } else if (shown > 0) {
      break;
    }
  }
  return out;
}

// A time as operators read it: RFC 3339 with its age (or how far ahead it is) beside it.
// 0 is "never".
std::string When(int64_t unix_seconds) {
  if (unix_seconds == 0) return "never";
  const int64_t now = std::time(nullptr);
  const int64_t d = now - unix_seconds;
  return Rfc3339(unix_seconds) + (d >= 0 ? " (" + Span(d) + " ago)" : " (in " + Span(-d) + ")");
}

void Check(const grpc::Status& s) {
  if (!s.ok()) {
    static const char* kNames[] = {"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT",
                                   "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
                                   "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
                                   "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL",
                                   "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"};
    int code = s.error_code();
    std::string name = code >= 0 && code <= 16 ? kNames[code] : std::to_string(code);
    throw Failure{1, name + ": " + s.error_message() + WhatToDo(s.error_code())};
  }
}

void SetDeadline(grpc::ClientContext& ctx, const Connection& c) {
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(c.timeout_seconds));
}

json TenantJson(const kms::v1::Tenant& t) {
  if (!t.key_name().empty()) {
    return {{"key_name", t.key_name()},
            {"state", t.state()},
            {"primary_dek_version", t.primary_dek_version()},
            {"min_decrypt_version", t.min_decrypt_version()},
            {"created_at_unix", t.created_at_unix()},
            {"dek_created_at_unix", t.dek_created_at_unix()}};
  }
  return {{"tenant_id", t.tenant_id()},
          {"state", t.state()},
          {"primary_dek_version", t.primary_dek_version()},
          {"min_decrypt_version", t.min_decrypt_version()},
          {"created_at", Rfc3339(t.created_at_unix())},
          {"created_at_unix", t.created_at_unix()},
          {"dek_created_at_unix", t.dek_created_at_unix()}};
}

void PrintTenant(const kms::v1::Tenant& t, bool as_json) {
  if (as_json) {
    std::cout << TenantJson(t).dump(2) << "\n";
  } else {
    std::cout << (t.key_name().empty() ? "tenant " + t.tenant_id() : "named key " + t.key_name())
              << "\n  state: " << t.state()
              << "\n  primary DEK version: " << t.primary_dek_version()
              << "\n  minimum decryption version: " << t.min_decrypt_version()
              << "\n  created: " << When(t.created_at_unix()) << "\n";
    if (t.dek_created_at_unix() != 0) {
      std::cout << "  primary DEK created: " << When(t.dek_created_at_unix()) << "\n";
    }
  }
}

// Lists tenants (or, with `named_keys`, named keys) from `page_token` on: one page, or
// every page with `all_pages`. Prints one line each, or with `as_json` one document
// {"<list_key>": [...], "next_page_token": "..."}.
void ListKeySets(kms::v1::AdminService::Stub& admin, const Connection& conn, bool named_keys,
                 int page_size, std::string token, bool all_pages, bool as_json) {
  json all = json::array();
  do {
    grpc::ClientContext ctx;
    SetDeadline(ctx, conn);
    kms::v1::ListTenantsRequest req;
    req.set_named_keys(named_keys);
    req.set_page_size(page_size);
    req.set_page_token(token);
    kms::v1::ListTenantsResponse resp;
    Check(admin.ListTenants(&ctx, req, &resp));
    for (const auto& t : resp.tenants()) {
      if (as_json) {
        all.push_back(TenantJson(t));
      } else {
        std::cout << (named_keys ? t.key_name() : t.tenant_id()) << "\t" << t.state() << "\tDEK v"
                  << t.primary_dek_version() << "\n";
      }
    }
    token = resp.next_page_token();
    if (!all_pages && !token.empty() && !as_json) std::cout << "next page: --page-token " << token << "\n";
  } while (all_pages && !token.empty());
  if (as_json) std::cout << json{{named_keys ? "keys" : "tenants", all}, {"next_page_token", token}}.dump(2) << "\n";
}

// Shreds the key set `req` names and writes its signed receipt to `receipt_out` (when
// empty: DefaultReceiptPath(`receipt_name`), which must not contain '/', else Failure
// `bad_name`). Where the receipt goes is settled before anything is destroyed: an
// existing file is refused. False when the shred stood but the receipt could not be
// written: it is then printed on stderr rather than lost.
bool ShredKeepingTheReceipt(kms::v1::AdminService::Stub& admin, const Connection& conn,
                            const kms::v1::ShredTenantRequest& req, const std::string& receipt_name,
                            const char* bad_name, std::string& receipt_out,
                            kms::v1::ShredTenantResponse* resp) {
  if (receipt_out.empty()) {
    if (receipt_name.find('/') != std::string::npos) throw Failure{2, bad_name};
    receipt_out = kms::cli::DefaultReceiptPath(receipt_name);
  }
  if (access(receipt_out.c_str(), F_OK) == 0) {
    throw Failure{2, receipt_out + " exists; refusing to overwrite it (choose --receipt-out)"};
  }
  grpc::ClientContext ctx;
  SetDeadline(ctx, conn);
  Check(admin.ShredTenant(&ctx, req, resp));
  absl::Status written = kms::cli::WriteNewFile(receipt_out, resp->receipt_jws() + "\n");
  if (!written.ok()) {
    std::cerr << "kmsctl: " << written.message() << "\nreceipt:\n" << resp->receipt_jws() << "\n";
    return false;
  }
  return true;
}

void ParseContext(const std::vector<std::string>& pairs,
                  google::protobuf::Map<std::string, std::string>* out,
                  const char* flag = "--context") {
  for (const std::string& kv : pairs) {
    size_t eq = kv.find('=');
    if (eq == std::string::npos || eq == 0) {
      throw Failure{2, std::string(flag) + " takes key=value, got '" + kv + "'"};
    }
    (*out)[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
}

// The key set a data command names: --tenant T or --key NAME, exactly one.
struct KeyChoice {
  std::string tenant, name;
  template <typename Request>
  void Set(Request* req) const {
    if (tenant.empty() == name.empty()) throw Failure{2, "name the key with --tenant T or --key NAME (one of the two)"};
    req->set_tenant_id(tenant);
    req->set_key_name(name);
  }
};

// --- kmsctl audit

kms::store::AuditRecord FromProto(const kms::v1::AuditRecord& a) {
  kms::store::AuditRecord r;
  r.id = a.id();
  r.node = a.node_id();
  r.seq = a.seq();
  r.at_ms = a.at_unix_ms();
  r.kind = a.kind();
  r.identity = a.identity();
  r.operation = a.operation();
  r.tenant = a.tenant_id();
  r.tenants = a.tenants();
  r.calls = a.calls();
  r.key_versions = a.key_versions();
  r.outcome = a.outcome();
  r.request_id = a.request_id();
  r.prev_hash.assign(a.prev_hash().begin(), a.prev_hash().end());
  r.hash.assign(a.hash().begin(), a.hash().end());
  return r;
}

std::string Hex(const std::string& bytes) {
  static const char* kDigits = "0123456789abcdef";
  std::string out;
  for (unsigned char c : bytes) {
    out += kDigits[c >> 4];
    out += kDigits[c & 15];
  }
  return out;
}

std::string Rfc3339Ms(int64_t unix_ms) {
  char ms[8];
  std::snprintf(ms, sizeof ms, ".%03d", static_cast<int>(unix_ms % 1000));
  std::string s = Rfc3339(unix_ms / 1000);
  return s.substr(0, s.size() - 1) + ms + "Z";
}

// One record: a JSON line, or one line of text.
void PrintAuditRecord(const kms::v1::AuditRecord& a, bool as_json) {
  if (as_json) {
    std::cout << json{{"id", a.id()}, {"time", Rfc3339Ms(a.at_unix_ms())},
                      {"node_id", a.node_id()}, {"seq", a.seq()}, {"kind", a.kind()},
                      {"identity", a.identity()}, {"operation", a.operation()},
                      {"tenant_id", a.tenant_id()}, {"tenants", a.tenants()},
                      {"calls", a.calls()}, {"key_versions", a.key_versions()},
                      {"outcome", a.outcome()}, {"request_id", a.request_id()},
                      {"prev_hash", Hex(a.prev_hash())}, {"hash", Hex(a.hash())}}
                     .dump()
              << "\n";
    return;
  }
  std::cout << Rfc3339Ms(a.at_unix_ms()) << " " << a.node_id() << "#" << a.seq() << " "
            << a.kind() << " " << a.operation() << " by " << (a.identity().empty() ? "-" : a.identity())
            << " " << a.outcome();
  if (!a.tenant_id().empty()) std::cout << " tenant=" << a.tenant_id();
  if (a.kind() == "data") std::cout << " calls=" << a.calls() << " tenants=" << a.tenants();
  if (!a.key_versions().empty()) std::cout << " keys=" << a.key_versions();
  std::cout << " request=" << a.request_id() << "\n";
}

std::string Trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.pop_back();
  return s;
}

json RotationJobJson(const kms::v1::RotationJob& j, double rate, int64_t eta_seconds) {
  return {{"job_id", j.job_id()},
          {"kind", j.kind()},
          {"state", j.state()},
          {"from_kek_version", j.from_kek_version()},
          {"to_kek_version", j.to_kek_version()},
          {"total", j.total()},
          {"done", j.done()},
          {"skipped", j.skipped()},
          {"started_at_unix", j.started_at_unix()},
          {"updated_at_unix", j.updated_at_unix()},
          {"finished_at_unix", j.finished_at_unix()},
          {"rate_per_second", rate},
          {"eta_seconds", eta_seconds},
          {"last_error", j.last_error()}};
}

kms::v1::RotationJob GetJob(kms::v1::AdminService::Stub& admin, const Connection& conn,
                            const std::string& job_id) {
  grpc::ClientContext ctx;
  SetDeadline(ctx, conn);
  kms::v1::GetRotationJobRequest req;
  req.set_job_id(job_id);
  kms::v1::GetRotationJobResponse resp;
  Check(admin.GetRotationJob(&ctx, req, &resp));
  return resp.job();
}

// Shows a re-wrap job, once or (follow) until it ends: a progress bar with rate and ETA
// on a terminal, one plain line per poll otherwise, one JSON object per line with -o json.
// The rate is measured between polls (the server's average before the second poll).
kms::v1::RotationJob ShowJob(kms::v1::AdminService::Stub& admin, const Connection& conn,
                             const std::string& job_id, bool follow, bool as_json, double poll_seconds) {
  const bool tty = !as_json && isatty(STDOUT_FILENO);
  uint64_t last_moved = 0;
  auto last_time = std::chrono::steady_clock::now();
  bool have_last = false;
  std::string id = job_id;
  while (true) {
    kms::v1::RotationJob j = GetJob(admin, conn, id);
    id = j.job_id();  // the newest job when none was named: keep following that one
    const auto now = std::chrono::steady_clock::now();
    const uint64_t moved = j.done() + j.skipped();
    double rate = j.rate_per_second();
    if (have_last) {
      const double dt = std::chrono::duration<double>(now - last_time).count();
      if (dt > 0 && moved >= last_moved) rate = static_cast<double>(moved - last_moved) / dt;
    }
    last_moved = moved;
    last_time = now;
    have_last = true;
    const bool running = j.state() == "running";
    const uint64_t left = j.total() > moved ? j.total() - moved : 0;
    const int64_t eta = running && rate > 0 ? static_cast<int64_t>(static_cast<double>(left) / rate + 0.5)
                                            : (running ? -1 : 0);
    if (as_json) {
      std::cout << RotationJobJson(j, rate, eta).dump() << std::endl;
    } else {
      const double pct = j.total() == 0 ? 100.0 : 100.0 * static_cast<double>(std::min(moved, j.total())) /
                                                      static_cast<double>(j.total());
      std::ostringstream line;
      line << "job " << j.job_id() << " " << j.state() << " KEK v" << j.from_kek_version() << "..v"
           << (j.to_kek_version() > 0 ? j.to_kek_version() - 1 : 0) << " -> v" << j.to_kek_version()
           << ": " << j.done() << "/" << j.total() << " re-wrapped, " << j.skipped() << " skipped, "
           << static_cast<int64_t>(rate) << " keys/s";
      if (running) line << ", ETA " << (eta < 0 ? std::string("?") : std::to_string(eta) + " s");
      if (!j.last_error().empty()) line << ", error: " << j.last_error();
      if (tty) {
        constexpr int kWidth = 30;
        const int filled = static_cast<int>(pct / 100.0 * kWidth);
        std::cout << "\r[" << std::string(filled, '#') << std::string(kWidth - filled, '.') << "] "
                  << static_cast<int>(pct) << "% " << line.str() << "\x1b[K" << std::flush;
        if (!follow || !running) std::cout << "\n";
      } else {
        std::cout << line.str() << std::endl;
      }
    }
    if (!follow || !running) return j;
    std::this_thread::sleep_for(std::chrono::duration<double>(poll_seconds));
  }
}

// Takes a key out of a response field into a wiped buffer, and wipes the field.
kms::SecretBytes TakeSecret(std::string* field) {
  kms::SecretBytes secret = kms::SecretBytes::CopyOf(*field);
  if (!field->empty()) OPENSSL_cleanse(field->data(), field->size());
  field->clear();
  return secret;
}

void CheckLocal(const absl::Status& s, int exit_code = 2) {
  if (!s.ok()) throw Failure{exit_code, std::string(s.message())};
}

std::string B64(const std::string& bytes) {
  return kms::Base64Encode({reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()});
}

// stdin or a file; O_NOFOLLOW is not used: reading through a link is harmless.
int OpenInput(const std::string& path) {
  if (path == "-") return STDIN_FILENO;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Failure{2, "cannot read " + path + ": " + std::strerror(errno)};
  return fd;
}

std::optional<uint64_t> RegularFileSize(int fd) {
  struct stat st;
  if (::fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) return static_cast<uint64_t>(st.st_size);
  return std::nullopt;
}

// `tenant create-bulk`: the ids in batches of `batch` (AdminService.CreateTenants: one
// store transaction each), `parallel` calls in flight. Stops at the first failed call
// (exit 1, naming the batch's first id); ids created before it stay, and running the
// same command again skips them (they are counted as existing).
struct BulkResult {
  uint64_t created = 0;
  uint64_t existing = 0;
  double seconds = 0;
};

BulkResult CreateTenantsInBulk(kms::v1::AdminService::Stub& admin, const Connection& conn,
                               const std::vector<std::string>& ids, size_t batch, int parallel) {
  std::mutex mu;
  size_t next = 0;
  BulkResult result;
  std::optional<Failure> failure;
  const auto start = std::chrono::steady_clock::now();
  auto worker = [&] {
    for (;;) {
      size_t begin = 0;
      {
        std::lock_guard<std::mutex> lock(mu);
        if (failure || next >= ids.size()) return;
        begin = next;
        next = std::min(ids.size(), next + batch);
      }
      const size_t end = std::min(ids.size(), begin + batch);
      kms::v1::CreateTenantsRequest req;
      for (size_t i = begin; i < end; ++i) req.add_tenant_ids(ids[i]);
      kms::v1::CreateTenantsResponse resp;
      grpc::ClientContext ctx;
      SetDeadline(ctx, conn);
      grpc::Status st = admin.CreateTenants(&ctx, req, &resp);
      std::lock_guard<std::mutex> lock(mu);
      if (!st.ok()) {
        if (!failure) {
          try {
            Check(st);
          } catch (const Failure& f) {
            failure = Failure{f.exit_code, "batch starting at " + ids[begin] + ": " + f.message};
          }
        }
        return;
      }
      result.created += resp.created_count();
      result.existing += (end - begin) - resp.created_count();
    }
  };
  std::vector<std::thread> threads;
  for (int i = 0; i < parallel; ++i) threads.emplace_back(worker);
  for (std::thread& t : threads) t.join();
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (failure) {
    std::cerr << "kmsctl: " << result.created << " tenants created, " << result.existing
              << " existed before the failure\n";
    throw *failure;
  }
  return result;
}

}  // namespace

int main(int argc, char** argv) {
  // The same TLS posture as the server: TLS 1.3 only (see src/server/server.h).
  setenv("GRPC_SSL_CIPHER_SUITES", "PSK-AES256-GCM-SHA384", 1);

  CLI::App app{"kmsctl: operate a kmsd node"};
  app.require_subcommand(1);
  // Global options may also follow the subcommand: `kmsctl tenant list -o json`.
  app.fallthrough();
  Connection flags;
  std::string config_path, output = "text";
  app.add_option("--addr", flags.addr, "kmsd gRPC address HOST:PORT");
  app.add_option("--ca", flags.ca, "CA certificate that signed kmsd's certificate (PEM)");
  app.add_option("--cert", flags.cert, "Client certificate (PEM)");
  app.add_option("--client-key", flags.key, "Client private key (PEM)");
  app.add_option("--config", config_path, "Connection file (JSON: addr, ca, cert, key); default $KMSCTL_CONFIG");
  app.add_option("--timeout", flags.timeout_seconds, "Deadline per call, seconds")->capture_default_str();
  app.add_option("-o,--output", output, "text or json")->check(CLI::IsMember({"text", "json"}));

  auto* status = app.add_subcommand("status", "Node status: KEK versions, key ages, backends");

  auto* tenant = app.add_subcommand("tenant", "Tenants");
  tenant->require_subcommand(1);
  tenant->fallthrough();
  std::string tenant_id;
  auto* tenant_create = tenant->add_subcommand("create", "Create a tenant and its first DEK");
  tenant_create->add_option("tenant_id", tenant_id)->required();
  auto* tenant_get = tenant->add_subcommand("get", "Show a tenant");
  tenant_get->add_option("tenant_id", tenant_id)->required();
  auto* tenant_list = tenant->add_subcommand("list", "List tenants");
  int page_size = 100;
  std::string page_token;
  bool all_pages = false;
  tenant_list->add_option("--page-size", page_size)->capture_default_str();
  tenant_list->add_option("--page-token", page_token);
  tenant_list->add_flag("--all", all_pages, "Follow every page");

  std::string bulk_from, bulk_prefix;
  uint64_t bulk_count = 0, bulk_start = 0;
  size_t bulk_batch = 1000;
  int bulk_parallel = 2;
  auto* tenant_bulk = tenant->add_subcommand(
      "create-bulk",
      "Create many tenants (a platform's migration): 1,000 per call and store transaction; "
      "existing ids are skipped, so a failed run can be run again");
  tenant_bulk->add_option("--from", bulk_from, "File with one tenant id per line (- for stdin)");
  tenant_bulk->add_option("--prefix", bulk_prefix,
                          "Instead of --from: the ids PREFIX<start> .. PREFIX<start+count-1>");
  tenant_bulk->add_option("--count", bulk_count, "With --prefix: how many ids");
  tenant_bulk->add_option("--start", bulk_start, "With --prefix: the first number")->capture_default_str();
  tenant_bulk->add_option("--batch", bulk_batch, "Tenants per call (1-1000)")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000));
  tenant_bulk->add_option("--parallel", bulk_parallel, "Calls in flight (1-16)")
      ->capture_default_str()
      ->check(CLI::Range(1, 16));
  auto* tenant_rotate = tenant->add_subcommand("rotate", "Make a new DEK version the tenant's primary");
  tenant_rotate->add_option("tenant_id", tenant_id)->required();
  std::string confirm;
  auto* tenant_shred =
      tenant->add_subcommand("shred", "Crypto-shred a tenant: destroy all its DEKs (irreversible)");
  tenant_shred->add_option("tenant_id", tenant_id)->required();
  tenant_shred->add_option("--confirm", confirm, "Repeat the tenant id to confirm")->required();
  std::string receipt_out;
  tenant_shred->add_option("--receipt-out", receipt_out,
                           "Write the signed receipt (compact JWS) here; never overwrites "
                           "(default: shred-receipt-<tenant>.jws in the current directory)");
  uint32_t min_version = 0;
  auto* tenant_min_version = tenant->add_subcommand(
      "min-version", "Retire the tenant's DEK versions below N: their ciphertexts stop decrypting");
  tenant_min_version->add_option("tenant_id", tenant_id)->required();
  tenant_min_version->add_option("version", min_version, "The minimum decryption version N")
      ->required();

  // Named platform keys: managed like tenants (kept as tenants in a reserved namespace).
  auto* named = app.add_subcommand("key", "Named platform keys (backup, clickhouse-disk, ...)");
  named->require_subcommand(1);
  named->fallthrough();
  std::string key_name;
  auto* key_create = named->add_subcommand("create", "Create a named key and its first DEK");
  key_create->add_option("name", key_name)->required();
  auto* key_get = named->add_subcommand("get", "Show a named key");
  key_get->add_option("name", key_name)->required();
  auto* key_list = named->add_subcommand("list", "List the named keys");
  key_list->add_option("--page-size", page_size)->capture_default_str();
  key_list->add_option("--page-token", page_token);
  key_list->add_flag("--all", all_pages, "Follow every page");
  auto* key_rotate = named->add_subcommand("rotate", "Make a new DEK version the named key's primary");
  key_rotate->add_option("name", key_name)->required();
  auto* key_shred = named->add_subcommand(
      "shred", "Crypto-shred a named key: every data key it wrapped is lost (irreversible)");
  key_shred->add_option("name", key_name)->required();
  key_shred->add_option("--confirm", confirm, "Repeat the key name to confirm")->required();
  key_shred->add_option("--receipt-out", receipt_out,
                        "Write the signed receipt here; never overwrites "
                        "(default: shred-receipt-key-<name>.jws)");
  auto* key_min_version = named->add_subcommand(
      "min-version", "Retire the named key's DEK versions below N");
  key_min_version->add_option("name", key_name)->required();
  key_min_version->add_option("version", min_version, "The minimum decryption version N")->required();

  auto* keys_cmd = app.add_subcommand("keys", "KEK and DEK versions");
  keys_cmd->require_subcommand(1);
  keys_cmd->fallthrough();
  auto* keys_list = keys_cmd->add_subcommand(
      "list", "Every KEK version (state, age, what it wraps) and tenants' DEK versions");
  std::string keys_tenant;
  keys_list->add_option("--tenant", keys_tenant, "Only this tenant (default: a page of tenants)");
  std::string keys_key;
  keys_list->add_option("--key", keys_key, "Only this named key");
  keys_list->add_option("--page-size", page_size, "Tenants per page")->capture_default_str();
  keys_list->add_option("--page-token", page_token);
  keys_list->add_flag("--all", all_pages, "Follow every page");

  auto* kek = app.add_subcommand("kek", "Key-encryption keys");
  kek->require_subcommand(1);
  kek->fallthrough();
  auto* kek_rotate = kek->add_subcommand(
      "rotate", "Create the next KEK version in the HSM and start re-wrapping every key under it");
  bool wait = false;
  double poll_seconds = 1.0;
  int64_t wait_timeout = 86400;
  kek_rotate->add_flag("--wait", wait,
                       "Follow the re-wrap job until it is done and the old KEK is retired");
  kek_rotate->add_option("--poll", poll_seconds, "Seconds between progress polls")->capture_default_str();
  kek_rotate->add_option("--wait-timeout", wait_timeout,
                         "Give up waiting for the old KEK's retirement after this many seconds")
      ->capture_default_str();

  auto* rotation = app.add_subcommand("rotation", "KEK re-wrap jobs");
  rotation->require_subcommand(1);
  rotation->fallthrough();
  std::string job_id;
  bool follow = false;
  auto* rotation_status =
      rotation->add_subcommand("status", "Progress of a re-wrap job (default: the newest)");
  rotation_status->add_option("job_id", job_id, "Job id (default: the newest job)");
  rotation_status->add_flag("-f,--follow", follow, "Keep showing progress until the job ends");
  rotation_status->add_option("--poll", poll_seconds, "Seconds between polls")->capture_default_str();

  auto* jwt = app.add_subcommand("jwt", "ES256 access tokens");
  jwt->require_subcommand(1);
  jwt->fallthrough();
  std::string claims, token;
  uint32_t ttl = 0;
  auto* jwt_sign = jwt->add_subcommand("sign", "Sign claims (a JSON object); prints the token");
  jwt_sign->add_option("--claims", claims, "Claims JSON object (default: stdin)");
  jwt_sign->add_option("--ttl", ttl, "Lifetime in seconds (default and maximum: JWT_ACCESS_TOKEN_TTL)");
  auto* jwt_verify = jwt->add_subcommand("verify", "Verify a token (--token or stdin); prints its claims");
  jwt_verify->add_option("--token", token, "The compact JWT (default: stdin)");
  auto* jwt_status = jwt->add_subcommand("status", "Signing-key lifecycle state and keys");
  auto* jwt_rotate = jwt->add_subcommand("rotate", "Start a signing-key rotation");
  auto* jwt_ack = jwt->add_subcommand("ack", "Acknowledge Critical once the backends are back");
  auto* jwks = app.add_subcommand("jwks", "Print the JWKS (the public keys verifiers use)");

  std::string data;
  std::vector<std::string> context;
  auto* encrypt = app.add_subcommand("encrypt", "Encrypt --data (or stdin); prints Base64 ciphertext");
  auto* decrypt = app.add_subcommand("decrypt", "Decrypt Base64 --data (or stdin); prints the plaintext");
  auto* reencrypt = app.add_subcommand(
      "reencrypt", "Move Base64 ciphertext (--data or stdin) to the tenant's primary DEK version");
  KeyChoice key_choice;
  for (CLI::App* cmd : {encrypt, decrypt, reencrypt}) {
    cmd->add_option("--tenant", key_choice.tenant, "Tenant id");
    cmd->add_option("--key", key_choice.name, "Named key (instead of --tenant)");
    cmd->add_option("--data", data, "Input (default: stdin)");
    cmd->add_option("--context", context, "Encryption context key=value (repeatable)");
  }
  // Data keys for jobs and sidecars (backups, ClickHouse disks).
  auto* datakey = app.add_subcommand("datakey", "Data keys: AES-256 keys kmsd wraps for you");
  datakey->require_subcommand(1);
  datakey->fallthrough();
  std::string plaintext_out, key_format = "hex", wrapped;
  auto* datakey_generate = datakey->add_subcommand(
      "generate",
      "Make a data key: the plaintext key goes to --plaintext-out (a new 0600 file, or - for "
      "stdout on purpose), the wrapped key (Base64) to stdout; without --plaintext-out only "
      "the wrapped key is made");
  auto* datakey_decrypt = datakey->add_subcommand(
      "decrypt", "Unwrap a data key (--wrapped Base64, or stdin) into --plaintext-out");
  for (CLI::App* cmd : {datakey_generate, datakey_decrypt}) {
    cmd->add_option("--tenant", key_choice.tenant, "Tenant id");
    cmd->add_option("--key", key_choice.name, "Named key (instead of --tenant)");
    cmd->add_option("--context", context, "Context key=value (repeatable); the same to decrypt");
    cmd->add_option("--plaintext-out", plaintext_out,
                    "Write the plaintext key to this new file (mode 0600; never replaces a "
                    "file), or - for stdout");
    cmd->add_option("--format", key_format, "Plaintext key format: hex (ClickHouse key_hex), "
                                            "base64 or raw (32 bytes)")
        ->capture_default_str();
  }
  datakey_decrypt->add_option("--wrapped", wrapped, "The wrapped key, Base64 (default: stdin)");

  // Streaming file encryption under a fresh data key per file (src/crypto/file_stream.h).
  std::string in_path = "-", out_path = "-";
  uint32_t segment_size = kms::crypto::kDefaultSegmentSize;
  bool no_progress = false;
  auto* encrypt_file = app.add_subcommand(
      "encrypt-file", "Encrypt a file or pipe of any size under a fresh data key (one kmsd call)");
  encrypt_file->add_option("--tenant", key_choice.tenant, "Tenant id");
  encrypt_file->add_option("--key", key_choice.name, "Named key (instead of --tenant)");
  encrypt_file->add_option("--context", context, "Context key=value (repeatable), kept in the header");
  encrypt_file->add_option("--segment-size", segment_size, "Plaintext bytes per segment")
      ->capture_default_str();
  auto* decrypt_file = app.add_subcommand(
      "decrypt-file", "Decrypt what encrypt-file wrote (the key and context come from its header)");
  decrypt_file->add_option("--tenant", key_choice.tenant, "Expect this tenant's key");
  decrypt_file->add_option("--key", key_choice.name, "Expect this named key");
  for (CLI::App* cmd : {encrypt_file, decrypt_file}) {
    cmd->add_option("--in", in_path, "Input file, - for stdin")->capture_default_str();
    cmd->add_option("--out", out_path,
                    "Output file (created when complete, never replacing one), - for stdout")
        ->capture_default_str();
    cmd->add_flag("--no-progress", no_progress, "No progress bar on a terminal");
  }

  // Blind indexes for searchable encrypted columns.
  auto* index = app.add_subcommand("index", "Blind indexes: keyed hashes for look-ups on encrypted columns");
  index->require_subcommand(1);
  index->fallthrough();
  std::string normalization = "exact", value;
  auto* index_compute = index->add_subcommand(
      "compute", "The blind index (hex) of --value (or stdin, one value per line)");
  index_compute->add_option("--normalization", normalization, "email, phone, ip or exact")
      ->capture_default_str();
  index_compute->add_option("--value", value, "The value (default: stdin, one per line)");
  auto* index_rotate = index->add_subcommand(
      "rotate", "New blind-index key version; both indexes are returned until 'index finish'");
  auto* index_finish = index->add_subcommand(
      "finish", "End the re-index window: retire the previous blind-index key version");
  for (CLI::App* cmd : {index_compute, index_rotate, index_finish}) {
    cmd->add_option("--tenant", key_choice.tenant, "Tenant id");
    cmd->add_option("--key", key_choice.name, "Named key (instead of --tenant)");
  }

  std::vector<std::string> new_context;
  reencrypt->add_option("--new-context", new_context,
                        "Bind the new ciphertext to this context instead, key=value (repeatable)");

  auto* audit = app.add_subcommand("audit", "The hash-chained audit log");
  audit->require_subcommand(1);
  audit->fallthrough();
  std::string audit_node;
  int audit_lines = 20;
  bool audit_follow = false;
  auto* audit_tail = audit->add_subcommand(
      "tail", "Print the last audit records (-o json: JSON lines, for export)");
  audit_tail->add_option("-n,--lines", audit_lines, "How many records (1-1000)")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000));
  audit_tail->add_flag("-f,--follow", audit_follow, "Keep printing new records as they are written");
  audit_tail->add_option("--node", audit_node, "Only this node's records");
  auto* audit_verify = audit->add_subcommand(
      "verify", "Check every node's hash chain here, on this machine; names the first broken record");
  audit_verify->add_option("--node", audit_node, "Only this node's chain");

  app.footer(R"(Examples:
  kmsctl --config /etc/kmsd/kmsctl.json status
  kmsctl tenant create acme
  kmsctl tenant create-bulk --from tenant-ids.txt
  kmsctl tenant list --all -o json
  echo -n 'alice@example.com' | kmsctl encrypt --tenant acme --context field=email
  kmsctl tenant shred acme --confirm acme
  kmsctl audit tail -f -o json >> audit-export.jsonl
  kmsctl audit verify

Connection: --config FILE or $KMSCTL_CONFIG (JSON: addr, ca, cert, key), or the four flags.
Exit codes: 0 done, 1 the call failed (the message says what to do), 2 usage or local input error.)");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help and --version are "errors" with exit code 0; every real usage error exits 2.
    const int rc = app.exit(e);
    return rc == 0 ? 0 : 2;
  }
  const bool as_json = output == "json";

  try {
    Connection conn = Resolve(flags, config_path);
    std::shared_ptr<grpc::Channel> channel = Dial(conn);
    auto admin = kms::v1::AdminService::NewStub(channel);
    auto keys = kms::v1::KeyService::NewStub(channel);

    if (*datakey_generate || *datakey_decrypt) {
      if (key_choice.tenant.empty() == key_choice.name.empty()) {
        throw Failure{2, "name the key with --tenant T or --key NAME (one of the two)"};
      }
      absl::StatusOr<kms::cli::KeyFormat> format = kms::cli::ParseKeyFormat(key_format);
      CheckLocal(format.status());
      if (*datakey_decrypt && plaintext_out.empty()) {
        throw Failure{2, "datakey decrypt needs --plaintext-out FILE (or - for stdout)"};
      }
      if (plaintext_out == "-" && isatty(STDOUT_FILENO) && *format == kms::cli::KeyFormat::kRaw) {
        throw Failure{2, "refusing to write a raw key to a terminal (use --format hex)"};
      }
      // The key file is created before kmsd is asked, so that an existing file stops
      // the command with nothing done; it is removed again if the call fails.
      std::optional<kms::cli::ExclusiveFile> key_file;
      if (!plaintext_out.empty()) {
        absl::StatusOr<kms::cli::ExclusiveFile> opened = kms::cli::ExclusiveFile::Open(plaintext_out);
        CheckLocal(opened.status());
        key_file.emplace(std::move(*opened));
      }
      kms::SecretBytes key;
      std::string wrapped_key;
      uint32_t dek_version = 0;
      grpc::ClientContext ctx;
      SetDeadline(ctx, conn);
      if (*datakey_generate && key_file.has_value()) {
        kms::v1::GenerateDataKeyRequest req;
        key_choice.Set(&req);
        ParseContext(context, req.mutable_context());
        kms::v1::GenerateDataKeyResponse resp;
        Check(keys->GenerateDataKey(&ctx, req, &resp));
        key = TakeSecret(resp.mutable_plaintext());
        wrapped_key = resp.wrapped_key();
        dek_version = resp.dek_version();
      } else if (*datakey_generate) {
        kms::v1::GenerateDataKeyWithoutPlaintextRequest req;
        key_choice.Set(&req);
        ParseContext(context, req.mutable_context());
        kms::v1::GenerateDataKeyWithoutPlaintextResponse resp;
        Check(keys->GenerateDataKeyWithoutPlaintext(&ctx, req, &resp));
        wrapped_key = resp.wrapped_key();
        dek_version = resp.dek_version();
      } else {
        std::string b64 = Trim(datakey_decrypt->count("--wrapped") ? wrapped : ReadStdin());
        absl::StatusOr<std::vector<uint8_t>> raw = kms::Base64Decode(b64);
        if (!raw.ok()) throw Failure{2, "the wrapped key is not valid Base64"};
        kms::v1::DecryptDataKeyRequest req;
        key_choice.Set(&req);
        ParseContext(context, req.mutable_context());
        req.set_wrapped_key(std::string(raw->begin(), raw->end()));
        kms::v1::DecryptDataKeyResponse resp;
        Check(keys->DecryptDataKey(&ctx, req, &resp));
        key = TakeSecret(resp.mutable_plaintext());
        wrapped_key = req.wrapped_key();
        dek_version = resp.dek_version();
      }
      if (key_file.has_value()) {
        CheckLocal(key_file->Write(kms::cli::FormatKey(key, *format)), 1);
        CheckLocal(key_file->Commit(), 1);
      }
      if (*datakey_generate) {
        if (plaintext_out == "-") {
          std::cerr << B64(wrapped_key) << "\n";  // stdout holds the key
        } else if (as_json) {
          std::cout << json{{"wrapped_key", B64(wrapped_key)}, {"dek_version", dek_version},
                            {"plaintext_file", plaintext_out}}.dump(2) << "\n";
        } else {
          std::cout << B64(wrapped_key) << "\n";
        }
      }
    } else if (*encrypt_file) {
      if (key_choice.tenant.empty() == key_choice.name.empty()) {
        throw Failure{2, "name the key with --tenant T or --key NAME (one of the two)"};
      }
      if (out_path == "-" && isatty(STDOUT_FILENO)) {
        throw Failure{2, "refusing to write encrypted bytes to a terminal (use --out FILE or a pipe)"};
      }
      kms::crypto::FileHeader header;
      header.segment_size = segment_size;
      header.key_kind = key_choice.name.empty() ? kms::crypto::FileKeyKind::kTenant
                                                : kms::crypto::FileKeyKind::kNamedKey;
      header.key_name = key_choice.name.empty() ? key_choice.tenant : key_choice.name;
      google::protobuf::Map<std::string, std::string> ctx_map;
      ParseContext(context, &ctx_map);
      for (const auto& [k, v] : ctx_map) header.context.emplace_back(k, v);
      if (segment_size < kms::crypto::kMinSegmentSize || segment_size > kms::crypto::kMaxSegmentSize) {
        throw Failure{2, "--segment-size must be between 4096 and 16777216"};
      }
      const int in_fd = OpenInput(in_path);
      absl::StatusOr<kms::cli::AtomicOutput> out = kms::cli::AtomicOutput::Open(out_path);
      CheckLocal(out.status());
      // One kmsd call per file: a fresh data key.
      kms::v1::GenerateDataKeyRequest req;
      key_choice.Set(&req);
      *req.mutable_context() = ctx_map;
      kms::v1::GenerateDataKeyResponse resp;
      {
        grpc::ClientContext ctx;
        SetDeadline(ctx, conn);
        Check(keys->GenerateDataKey(&ctx, req, &resp));
      }
      kms::SecretBytes key = TakeSecret(resp.mutable_plaintext());
      header.wrapped_key = resp.wrapped_key();
      absl::StatusOr<std::array<uint8_t, kms::crypto::kFileNoncePrefixSize>> prefix =
          kms::crypto::NewNoncePrefix();
      CheckLocal(prefix.status(), 1);
      header.nonce_prefix = *prefix;
      kms::cli::ProgressBar bar(!no_progress && isatty(STDERR_FILENO), RegularFileSize(in_fd));
      kms::crypto::FdSource source(in_fd);
      kms::crypto::FdSink sink(out->fd());
      uint64_t done = 0;
      CheckLocal(kms::crypto::EncryptFileStream(header, key, source, sink,
                                                [&](uint64_t n) {
                                                  done = n;
                                                  bar.Update(n);
                                                }),
                 1);
      bar.Finish(done);
      CheckLocal(out->Commit(), 1);
    } else if (*decrypt_file) {
      if (out_path == "-" && isatty(STDOUT_FILENO) && !no_progress) {
        // Plaintext on a terminal is allowed (it may be text), but no bar over it.
        no_progress = true;
      }
      const int in_fd = OpenInput(in_path);
      kms::crypto::FdSource source(in_fd);
      std::vector<uint8_t> raw_header;
      absl::StatusOr<kms::crypto::FileHeader> header = kms::crypto::ReadFileHeader(source, &raw_header);
      CheckLocal(header.status(), 1);
      const bool named = header->key_kind == kms::crypto::FileKeyKind::kNamedKey;
      if ((!key_choice.name.empty() && (!named || key_choice.name != header->key_name)) ||
          (!key_choice.tenant.empty() && (named || key_choice.tenant != header->key_name))) {
        throw Failure{1, std::string("the file is encrypted under ") +
                             (named ? "named key " : "tenant ") + header->key_name +
                             ", not the key given"};
      }
      absl::StatusOr<kms::cli::AtomicOutput> out = kms::cli::AtomicOutput::Open(out_path);
      CheckLocal(out.status());
      kms::v1::DecryptDataKeyRequest req;
      (named ? req.mutable_key_name() : req.mutable_tenant_id())->assign(header->key_name);
      req.set_wrapped_key(header->wrapped_key);
      for (const auto& [k, v] : header->context) (*req.mutable_context())[k] = v;
      kms::v1::DecryptDataKeyResponse resp;
      {
        grpc::ClientContext ctx;
        SetDeadline(ctx, conn);
        Check(keys->DecryptDataKey(&ctx, req, &resp));
      }
      kms::SecretBytes key = TakeSecret(resp.mutable_plaintext());
      std::optional<uint64_t> total = RegularFileSize(in_fd);
      if (total.has_value()) {
        // Plaintext size = file size - header - one tag per segment.
        const uint64_t body = *total > raw_header.size() ? *total - raw_header.size() : 0;
        const uint64_t sealed = header->segment_size + 16;
        const uint64_t segments = std::max<uint64_t>(1, (body + sealed - 1) / sealed);
        total = body > segments * 16 ? body - segments * 16 : 0;
      }
      kms::cli::ProgressBar bar(!no_progress && isatty(STDERR_FILENO), total);
      kms::crypto::FdSink sink(out->fd());
      uint64_t done = 0;
      absl::Status opened = kms::crypto::DecryptFileStream(*header, raw_header, key, source, sink,
                                                           [&](uint64_t n) {
                                                             done = n;
                                                             bar.Update(n);
                                                           });
      if (!opened.ok()) {
        bar.Finish(done);
        throw Failure{1, std::string(opened.message()) +
                             (out->is_stdout() ? "; the output written so far is incomplete: "
                                                 "discard it"
                                               : "; nothing was written")};
      }
      bar.Finish(done);
      CheckLocal(out->Commit(), 1);
    } else if (*index_compute) {
      std::vector<std::string> values;
      if (index_compute->count("--value")) {
        values.push_back(value);
      } else {
        std::istringstream lines(ReadStdin());
        for (std::string line; std::getline(lines, line);) {
          if (!line.empty() && line.back() == '\r') line.pop_back();
          values.push_back(line);
        }
      }
      grpc::ClientContext ctx;
      SetDeadline(ctx, conn);
      kms::v1::ComputeBlindIndexBatchRequest req;
      key_choice.Set(&req);
      for (const std::string& v : values) {
        auto* item = req.add_items();
        item->set_normalization(normalization);
        item->set_value(v);
      }
      kms::v1::ComputeBlindIndexBatchResponse resp;
      Check(keys->ComputeBlindIndexBatch(&ctx, req, &resp));
      auto hex = [](const std::string& bytes) {
        static const char* d = "0123456789abcdef";
        std::string out;
        for (unsigned char b : bytes) {
          out.push_back(d[b >> 4]);
          out.push_back(d[b & 0xf]);
        }
        return out;
      };
      json all = json::array();
      bool failed = false;
      for (const auto& r : resp.results()) {
        if (r.has_error()) {
          failed = true;
          if (as_json) {
            all.push_back({{"error", r.error().message()}});
          } else {
            std::cerr << "kmsctl: " << r.error().message() << "\n";
            std::cout << "-\n";
          }
          continue;
        }
        const auto& ok = r.ok();
        if (as_json) {
          json j = {{"index", hex(ok.current().index())},
                    {"index_key_version", ok.current().index_key_version()}};
          if (ok.has_previous()) {
            j["previous_index"] = hex(ok.previous().index());
            j["previous_index_key_version"] = ok.previous().index_key_version();
          }
          all.push_back(j);
        } else {
          std::cout << hex(ok.current().index());
          if (ok.has_previous()) std::cout << " " << hex(ok.previous().index());
          std::cout << "\n";
        }
      }
      if (as_json) std::cout << all.dump(2) << "\n";
      if (failed) return 1;
    } else if (*index_rotate) {
      grpc::ClientContext ctx;
      SetDeadline(ctx, conn);
      kms::v1::RotateBlindIndexKeyRequest req;
      key_choice.Set(&req);
      kms::v1::RotateBlindIndexKeyResponse resp;
      Check(admin->RotateBlindIndexKey(&ctx, req, &resp));
      if (as_json) {
        std::cout << json{{"index_key_version", resp.index_key_version()},
                          {"previous_index_key_version", resp.previous_index_key_version()}}.dump(2)
                  << "\n";
      } else {
        std::cout << "blind-index key version " << resp.index_key_version()
                  << " is current; version " << resp.previous_index_key_version()
                  << " stays live until 'kmsctl index finish' (re-index now)\n";
      }
    } else if (*index_finish) {
      grpc::ClientContext ctx;
      SetDeadline(ctx, conn);
      kms::v1::FinishBlindIndexRotationRequest req;
      key_choice.Set(&req);
      kms::v1::FinishBlindIndexRotationResponse resp;
      Check(admin->FinishBlindIndexRotation(&ctx, req, &resp));
      if (as_json) {
        std::cout << json{{"index_key_version", resp.index_key_version()}}.dump(2) << "\n";
      } else {
        std::cout << "re-index window closed; blind-index key version " << resp.index_key_version()
                  << " only\n";
      }
    } else if (*status) {
      grpc::ClientContext ctx;
      SetDeadline(ctx, conn);
      kms::v1::GetStatusResponse resp;
      Check(admin->GetStatus(&ctx, {}, &resp));
      if (as_json) {
        json keks = json::array();
        for (const auto& k : resp.kek_versions()) {
          keks.push_back({{"version", k.version()}, {"state", k.state()},
                          {"created_at", Rfc3339(k.created_at_unix())},
                          {"created_at_unix", k.created_at_unix()}, {"age_seconds", k.age_seconds()},
                          {"wrap_mechanism", k.wrap_mechanism()}});
        }
        json backends = json::array();
        for (const auto& b : resp.backends()) {
          backends.push_back({{"name", b.name()}, {"healthy", b.healthy()}, {"detail", b.detail()}});
        }
        json rotations = json::array();
        for (const auto& r : resp.rotations()) {
          rotations.push_back({{"kind", r.kind()}, {"due_in_seconds", r.due_in_seconds()},
                               {"known", r.known()}, {"pending", r.pending()},
                               {"skipped_since_unix", r.skipped_since_unix()},
                               {"last_error", r.last_error()}, {"running_job_id", r.running_job_id()}});
        }
        std::cout << json{{"version", resp.version()}, {"node_id", resp.node_id()},
                          {"rotations", rotations},
                          {"ready", resp.ready()}, {"uptime_seconds", resp.uptime_seconds()},
                          {"master_key_kind", resp.master_key_kind()},
                          {"store_backend", resp.store_backend()},
                          {"primary_kek_version", resp.primary_kek_version()},
                          {"kek_versions", keks}, {"tenant_count", resp.tenant_count()},
                          {"dek_cache_entries", resp.dek_cache_entries()}, {"backends", backends},
                          {"leader", resp.leader()}, {"jwt_state", resp.jwt_state()}}
                         .dump(2)
                  << "\n";
      } else {
        std::cout << "kmsd " << resp.version() << " on " << resp.node_id()
                  << (resp.ready() ? " (ready)" : " (NOT ready)") << ", up " << Span(resp.uptime_seconds())
                  << (resp.leader() ? ", leader" : "") << "\nmaster key: " << resp.master_key_kind()
                  << "\nstore: " << resp.store_backend() << "\nJWT signing keys: " << resp.jwt_state()
                  << "\nprimary KEK: v" << resp.primary_kek_version() << "\n";
        for (const auto& k : resp.kek_versions()) {
          std::cout << "  KEK v" << k.version() << " " << k.state() << ", created "
                    << When(k.created_at_unix()) << ", wrapped with " << k.wrap_mechanism() << "\n";
        }
        std::cout << "tenants: " << resp.tenant_count() << ", cached DEKs: " << resp.dek_cache_entries()
                  << "\n";
        for (const auto& b : resp.backends()) {
          std::cout << "backend " << b.name() << ": " << (b.healthy() ? "healthy" : "DOWN") << " ("
                    << b.detail() << ")\n";
        }
        for (const auto& r : resp.rotations()) {
          if (!r.known()) continue;
          std::cout << "rotation " << r.kind() << ": ";
          if (r.kind() == "dek") {
            std::cout << r.pending() << " tenants due at the last check";
            if (r.pending() > 0) std::cout << " (most overdue by " << -r.due_in_seconds() << " s)";
          } else {
            std::cout << (r.due_in_seconds() > 0
                              ? "due in " + std::to_string(r.due_in_seconds()) + " s"
                              : "OVERDUE by " + std::to_string(-r.due_in_seconds()) + " s");
          }
          if (r.skipped_since_unix() != 0) std::cout << ", checks skipped since " << r.skipped_since_unix();
          std::cout << "\n";
        }
      }
    } else if (*key_create || *key_get || *key_rotate || *key_min_version) {
      grpc::ClientContext ctx;
      SetDeadline(ctx, conn);
      kms::v1::Tenant t;
      if (*key_create) {
        kms::v1::CreateTenantRequest req;
        req.set_key_name(key_name);
        kms::v1::CreateTenantResponse resp;
        Check(admin->CreateTenant(&ctx, req, &resp));
        t = resp.tenant();
      } else if (*key_get) {
        kms::v1::GetTenantRequest req;
        req.set_key_name(key_name);
        kms::v1::GetTenantResponse resp;
        Check(admin->GetTenant(&ctx, req, &resp));
        t = resp.tenant();
      } else if (*key_rotate) {
        kms::v1::RotateTenantKeyRequest req;
        req.set_key_name(key_name);
        kms::v1::RotateTenantKeyResponse resp;
        Check(admin->RotateTenantKey(&ctx, req, &resp));
        t = resp.tenant();
      } else {
        kms::v1::SetMinDecryptVersionRequest req;
        req.set_key_name(key_name);
        req.set_min_decrypt_version(min_version);
        kms::v1::SetMinDecryptVersionResponse resp;
        Check(admin->SetMinDecryptVersion(&ctx, req, &resp));
        t = resp.tenant();
      }
      PrintTenant(t, as_json);
    } else if (*key_list) {
      ListKeySets(*admin, conn, /*named_keys=*/true, page_size, page_token, all_pages, as_json);
    } else if (*key_shred) {
      kms::v1::ShredTenantRequest req;
      req.set_key_name(key_name);
      req.set_confirm_key_name(confirm);
      kms::v1::ShredTenantResponse resp;
      if (!ShredKeepingTheReceipt(*admin, conn, req, "key-" + key_name, "invalid key name", receipt_out,
                                  &resp)) {
        return 1;
      }
      if (as_json) {
        std::cout << json{{"key_name", key_name}, {"state", "shredded"},
                          {"shredded_at_unix", resp.shredded_at_unix()},
                          {"receipt_file", receipt_out}}.dump(2) << "\n";
      } else {
        std::cout << "named key " << key_name << " shredded; signed receipt written to " << receipt_out << "\n";
      }
    } else if (*tenant_bulk) {
      if (bulk_from.empty() == bulk_prefix.empty()) {
        throw Failure{2, "name the ids with --from FILE or --prefix P --count N (one of the two)"};
      }
      std::vector<std::string> ids;
      if (!bulk_from.empty()) {
        std::ifstream file;
        if (bulk_from != "-") {
          file.open(bulk_from);
          if (!file) throw Failure{2, "cannot read " + bulk_from};
        }
        std::istream& in = bulk_from == "-" ? std::cin : file;
        for (std::string line; std::getline(in, line);) {
          if (!line.empty() && line.back() == '\r') line.pop_back();
          if (!line.empty()) ids.push_back(std::move(line));
        }
      } else {
        if (bulk_count == 0) throw Failure{2, "--prefix needs --count N (N > 0)"};
        ids.reserve(bulk_count);
        for (uint64_t i = 0; i < bulk_count; ++i) ids.push_back(bulk_prefix + std::to_string(bulk_start + i));
      }
      const BulkResult r = CreateTenantsInBulk(*admin, conn, ids, bulk_batch, bulk_parallel);
      const double rate = r.seconds > 0 ? static_cast<double>(r.created + r.existing) / r.seconds : 0;
      if (as_json) {
        std::cout << json{{"created", r.created}, {"existing", r.existing}, {"seconds", r.seconds},
                          {"tenants_per_second", rate}}.dump(2) << "\n";
      } else {
        std::cout << r.created << " tenants created, " << r.existing << " existed already, in "
                  << r.seconds << " s (" << static_cast<uint64_t>(rate) << " tenants/s)\n";
      }
    } else if (*tenant_create || *tenant_get) {
      grpc::ClientContext ctx;
      SetDeadline(ctx, conn);
      if (*tenant_create) {
        kms::v1::CreateTenantRequest req;
        req.set_tenant_id(tenant_id);
        kms::v1::CreateTenantResponse resp;
        Check(admin->CreateTenant(&ctx, req, &resp));
        PrintTenant(resp.tenant(), as_json);
      } else {
        kms::v1::GetTenantRequest req;
        req.set_tenant_id(tenant_id);
        kms::v1::GetTenantResponse resp;
        Check(admin->GetTenant(&ctx, req, &resp));
        PrintTenant(resp.tenant(), as_json);
      }
    } else if (*tenant_rotate) {
      grpc::ClientContext ctx;
      SetDeadline(ctx, conn);
      kms::v1::RotateTenantKeyRequest req;
      req.set_tenant_id(tenant_id);
      kms::v1::RotateTenantKeyResponse resp;
      Check(admin->RotateTenantKey(&ctx, req, &resp));
      PrintTenant(resp.tenant(), as_json);
    } else if (*tenant_shred) {
      kms::v1::ShredTenantRequest req;
      req.set_tenant_id(tenant_id);
      req.set_confirm_tenant_id(confirm);
      kms::v1::ShredTenantResponse resp;
      if (!ShredKeepingTheReceipt(*admin, conn, req, tenant_id, "invalid tenant id", receipt_out,
                                  &resp)) {
        return 1;
      }
      std::vector<uint32_t> versions(resp.destroyed_dek_versions().begin(),
                                     resp.destroyed_dek_versions().end());
      if (as_json) {
        std::cout << json{{"tenant_id", tenant_id},
                          {"state", "shredded"},
                          {"destroyed_dek_versions", versions},
                          {"shredded_at", kms::cli::Rfc3339(resp.shredded_at_unix())},
                          {"shredded_at_unix", resp.shredded_at_unix()},
                          {"node_id", resp.node_id()},
                          {"receipt_jws", resp.receipt_jws()},
                          {"receipt_file", receipt_out}}
                         .dump(2)
                  << "\n";
      } else {
        std::cout << "tenant " << tenant_id << " shredded: DEK versions";
        for (uint32_t v : versions) std::cout << " " << v;
        std::cout << " destroyed at " << kms::cli::Rfc3339(resp.shredded_at_unix()) << " on "
                  << resp.node_id() << "\nsigned receipt written to " << receipt_out << "\n";
      }
    } else if (*tenant_min_version) {
      grpc::ClientContext ctx;
      SetDeadline(ctx, conn);
      kms::v1::SetMinDecryptVersionRequest req;
      req.set_tenant_id(tenant_id);
      req.set_min_decrypt_version(min_version);
      kms::v1::SetMinDecryptVersionResponse resp;
      Check(admin->SetMinDecryptVersion(&ctx, req, &resp));
      PrintTenant(resp.tenant(), as_json);
    } else if (*keys_list) {
      // With --all: the KEKs of the first page, the tenants of every page.
      json all;
      std::string token = page_token;
      bool first = true;
      do {
        grpc::ClientContext ctx;
        SetDeadline(ctx, conn);
        kms::v1::ListKeysRequest req;
        req.set_tenant_id(keys_tenant);
        req.set_key_name(keys_key);
        req.set_page_size(page_size);
        req.set_page_token(token);
        kms::v1::ListKeysResponse resp;
        Check(admin->ListKeys(&ctx, req, &resp));
        token = resp.next_page_token();
        if (all_pages) resp.clear_next_page_token();
        if (!as_json) {
          std::cout << kms::cli::ListKeysText(resp, /*with_keks=*/first);
        } else if (first) {
          all = kms::cli::ListKeysJson(resp);
        } else {
          json page = kms::cli::ListKeysJson(resp);
          for (auto& t : page["tenants"]) all["tenants"].push_back(t);
        }
        first = false;
      } while (all_pages && !token.empty());
      if (as_json) std::cout << all.dump(2) << "\n";
    } else if (*reencrypt) {
      std::string b64 = Trim(reencrypt->count("--data") ? data : ReadStdin());
      absl::StatusOr<std::vector<uint8_t>> raw = kms::Base64Decode(b64);
      if (!raw.ok()) throw Failure{2, "ciphertext is not valid Base64"};
      grpc::ClientContext ctx;
      SetDeadline(ctx, conn);
      kms::v1::ReEncryptRequest req;
      key_choice.Set(&req);
      req.set_ciphertext(std::string(raw->begin(), raw->end()));
      ParseContext(context, req.mutable_context());
      if (reencrypt->count("--new-context") > 0) {
        req.set_replace_context(true);
        ParseContext(new_context, req.mutable_new_context(), "--new-context");
      }
      kms::v1::ReEncryptResponse resp;
      Check(keys->ReEncrypt(&ctx, req, &resp));
      std::string out = kms::Base64Encode(
          {reinterpret_cast<const uint8_t*>(resp.ciphertext().data()), resp.ciphertext().size()});
      if (as_json) {
        std::cout << json{{"ciphertext", out}, {"dek_version", resp.dek_version()},
                          {"source_dek_version", resp.source_dek_version()}}
                         .dump(2)
                  << "\n";
      } else {
        std::cout << out << "\n";
      }
    } else if (*kek_rotate) {
      kms::v1::RotateKekResponse resp;
      {
        grpc::ClientContext ctx;
        SetDeadline(ctx, conn);
        Check(admin->RotateKek(&ctx, {}, &resp));
      }
      if (as_json) {
        std::cout << json{{"primary_kek_version", resp.primary_kek_version()},
                          {"job_id", resp.job_id()}}.dump() << std::endl;
      } else {
        std::cout << "primary KEK is now version " << resp.primary_kek_version() << "; re-wrap job "
                  << resp.job_id() << std::endl;
      }
      if (wait) {
        kms::v1::RotationJob j = ShowJob(*admin, conn, resp.job_id(), true, as_json, poll_seconds);
        if (j.state() != "done") throw Failure{1, "re-wrap job " + j.job_id() + " " + j.state() + ": " + j.last_error()};
        // Retirement follows the job (at once on one node; after the grace in a cluster).
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(wait_timeout);
        while (true) {
          grpc::ClientContext ctx;
          SetDeadline(ctx, conn);
          kms::v1::GetStatusResponse st;
          Check(admin->GetStatus(&ctx, {}, &st));
          std::vector<uint32_t> active_old;
          for (const auto& k : st.kek_versions()) {
            if (k.version() < resp.primary_kek_version() && k.state() == "active") active_old.push_back(k.version());
          }
          if (active_old.empty()) break;
          if (std::chrono::steady_clock::now() > deadline) {
            throw Failure{1, "the re-wrap is done but KEK version " + std::to_string(active_old.front()) +
                                 " is not retired yet (see kmsd's log)"};
          }
          std::this_thread::sleep_for(std::chrono::duration<double>(poll_seconds));
        }
        if (as_json) {
          std::cout << json{{"job_id", j.job_id()}, {"state", "done"},
                            {"retired_below_kek_version", resp.primary_kek_version()}}.dump() << std::endl;
        } else {
          std::cout << "every key is under KEK version " << resp.primary_kek_version()
                    << "; older versions are retired" << std::endl;
        }
      }
    } else if (*rotation_status) {
      kms::v1::RotationJob j = ShowJob(*admin, conn, job_id, follow, as_json, poll_seconds);
      if (j.state() == "failed") return 1;
    } else if (*jwt_sign) {
      grpc::ClientContext ctx;
      SetDeadline(ctx, conn);
      kms::v1::SignJwtRequest req;
      req.set_claims_json(jwt_sign->count("--claims") ? claims : ReadStdin());
      req.set_ttl_seconds(ttl);
      kms::v1::SignJwtResponse resp;
      Check(keys->SignJwt(&ctx, req, &resp));
      if (as_json) {
        std::cout << json{{"jwt", resp.jwt()}, {"kid", resp.kid()},
                          {"issued_at_unix", resp.issued_at_unix()},
                          {"expires_at_unix", resp.expires_at_unix()}}.dump(2) << "\n";
      } else {
        std::cout << resp.jwt() << "\n";
      }
    } else if (*jwt_verify) {
      grpc::ClientContext ctx;
      SetDeadline(ctx, conn);
      kms::v1::VerifyJwtRequest req;
      req.set_jwt(Trim(jwt_verify->count("--token") ? token : ReadStdin()));
      kms::v1::VerifyJwtResponse resp;
      Check(keys->VerifyJwt(&ctx, req, &resp));
      if (as_json) {
        std::cout << json{{"kid", resp.kid()}, {"claims", json::parse(resp.claims_json())},
                          {"expires_at_unix", resp.expires_at_unix()}}.dump(2) << "\n";
      } else {
        std::cout << "valid, kid " << resp.kid() << ", expires " << When(resp.expires_at_unix())
                  << "\n" << resp.claims_json() << "\n";
      }
    } else if (*jwt_status) {
      grpc::ClientContext ctx;
      SetDeadline(ctx, conn);
      kms::v1::GetJwtStatusResponse resp;
      Check(admin->GetJwtStatus(&ctx, {}, &resp));
      json keys_json = json::array();
      for (const auto& k : resp.keys()) {
        keys_json.push_back({{"kid", k.kid()}, {"phase", k.phase()},
                             {"created_at_unix", k.created_at_unix()},
                             {"activate_at_unix", k.activate_at_unix()},
                             {"retire_at_unix", k.retire_at_unix()}, {"kek_version", k.kek_version()}});
      }
      if (as_json) {
        std::cout << json{{"state", resp.state()}, {"signing_kid", resp.signing_kid()},
                          {"keys", keys_json}, {"degraded_since_unix", resp.degraded_since_unix()},
                          {"backends_ok", resp.backends_ok()}, {"last_error", resp.last_error()},
                          {"next_rotation_at_unix", resp.next_rotation_at_unix()}}.dump(2) << "\n";
      } else {
        std::cout << "state: " << resp.state() << "\nsigning kid: " << resp.signing_kid() << "\n";
        for (const auto& k : resp.keys()) {
          std::cout << "  " << k.kid() << " " << k.phase() << ", activates " << When(k.activate_at_unix())
                    << (k.retire_at_unix() ? ", retires " + When(k.retire_at_unix()) : "")
                    << "\n";
        }
        if (resp.degraded_since_unix()) {
          std::cout << "degraded since " << When(resp.degraded_since_unix()) << ": " << resp.last_error() << "\n";
        }
        std::cout << "next rotation: " << When(resp.next_rotation_at_unix()) << "\n";
      }
    } else if (*jwt_rotate) {
      grpc::ClientContext ctx;
      SetDeadline(ctx, conn);
      kms::v1::RotateJwtKeyResponse resp;
      Check(admin->RotateJwtKey(&ctx, {}, &resp));
      if (as_json) {
        std::cout << json{{"new_kid", resp.new_kid()}, {"new_activate_at_unix", resp.new_activate_at_unix()},
                          {"old_kid", resp.old_kid()}, {"old_retire_at_unix", resp.old_retire_at_unix()}}
                         .dump(2) << "\n";
      } else {
        std::cout << "published " << resp.new_kid() << "; it signs from " << When(resp.new_activate_at_unix())
                  << "; " << resp.old_kid() << " verifies until " << When(resp.old_retire_at_unix()) << "\n";
      }
    } else if (*jwt_ack) {
      grpc::ClientContext ctx;
      SetDeadline(ctx, conn);
      kms::v1::AckJwtCriticalResponse resp;
      Check(admin->AckJwtCritical(&ctx, {}, &resp));
      std::cout << (as_json ? json{{"state", resp.state()}}.dump(2) : "state: " + resp.state()) << "\n";
    } else if (*jwks) {
      grpc::ClientContext ctx;
      SetDeadline(ctx, conn);
      kms::v1::GetJwksResponse resp;
      Check(keys->GetJwks(&ctx, {}, &resp));
      std::cout << json::parse(resp.jwks_json()).dump(2) << "\n";
    } else if (*tenant_list) {
      ListKeySets(*admin, conn, /*named_keys=*/false, page_size, page_token, all_pages, as_json);
    } else if (*encrypt) {
      grpc::ClientContext ctx;
      SetDeadline(ctx, conn);
      kms::v1::EncryptRequest req;
      key_choice.Set(&req);
      req.set_plaintext(encrypt->count("--data") ? data : ReadStdin());
      ParseContext(context, req.mutable_context());
      kms::v1::EncryptResponse resp;
      Check(keys->Encrypt(&ctx, req, &resp));
      std::string b64 = kms::Base64Encode(
          {reinterpret_cast<const uint8_t*>(resp.ciphertext().data()), resp.ciphertext().size()});
      if (as_json) {
        std::cout << json{{"ciphertext", b64}, {"dek_version", resp.dek_version()}}.dump(2) << "\n";
      } else {
        std::cout << b64 << "\n";
      }
    } else if (*audit_tail) {
      int64_t last_id = 0;
      {
        grpc::ClientContext ctx;
        SetDeadline(ctx, conn);
        kms::v1::ReadAuditRequest req;
        req.set_tail(audit_lines);
        req.set_node_id(audit_node);
        kms::v1::ReadAuditResponse resp;
        Check(admin->ReadAudit(&ctx, req, &resp));
        for (const auto& a : resp.records()) {
          PrintAuditRecord(a, as_json);
          last_id = a.id();
        }
        std::cout.flush();
      }
      while (audit_follow) {
        grpc::ClientContext ctx;
        SetDeadline(ctx, conn);
        kms::v1::ReadAuditRequest req;
        req.set_after_id(last_id);
        req.set_limit(1000);
        req.set_node_id(audit_node);
        kms::v1::ReadAuditResponse resp;
        Check(admin->ReadAudit(&ctx, req, &resp));
        for (const auto& a : resp.records()) {
          PrintAuditRecord(a, as_json);
          last_id = a.id();
        }
        std::cout.flush();
        if (resp.records_size() < 1000) std::this_thread::sleep_for(std::chrono::seconds(1));
      }
    } else if (*audit_verify) {
      // Verified here, from the records as stored: an auditor need not trust kmsd's word.
      kms::audit::ChainVerifier verifier;
      int64_t last_id = 0;
      absl::Status broken;
      while (broken.ok()) {
        grpc::ClientContext ctx;
        SetDeadline(ctx, conn);
        kms::v1::ReadAuditRequest req;
        req.set_after_id(last_id);
        req.set_limit(1000);
        req.set_node_id(audit_node);
        kms::v1::ReadAuditResponse resp;
        Check(admin->ReadAudit(&ctx, req, &resp));
        if (resp.records_size() == 0) break;
        for (const auto& a : resp.records()) {
          broken = verifier.Add(FromProto(a));
          last_id = a.id();
          if (!broken.ok()) break;
        }
      }
      if (!broken.ok()) {
        throw Failure{1, "audit chain BROKEN at " + std::string(broken.message()) +
                             "\n  the audit store was changed outside kmsd: keep the database as "
                             "it is for investigation, compare with your exported audit "
                             "(kmsctl audit tail -o json) and backups"};
      }
      json nodes = json::object();
      for (const auto& [node, n] : verifier.nodes()) {
        const bool from_start = n.first_seq == 1;
        if (as_json) {
          nodes[node] = {{"first_seq", n.first_seq}, {"last_seq", n.last_seq},
                         {"records", n.records},
                         {"first_prev_hash", Hex(std::string(n.first_prev_hash.begin(), n.first_prev_hash.end()))},
                         {"last_hash", Hex(std::string(n.last_hash.begin(), n.last_hash.end()))}};
        } else {
          std::cout << "node " << node << ": " << n.records << " records, seq " << n.first_seq
                    << ".." << n.last_seq << " intact"
                    << (from_start ? " from the chain's start"
                                   : " (older records removed by retention; verified from seq " +
                                         std::to_string(n.first_seq) + ", prev hash " +
                                         Hex(std::string(n.first_prev_hash.begin(), n.first_prev_hash.end())) + ")")
                    << "\n  head hash " << Hex(std::string(n.last_hash.begin(), n.last_hash.end())) << "\n";
        }
      }
      if (as_json) {
        std::cout << json{{"intact", true}, {"nodes", nodes}}.dump(2) << "\n";
      } else if (verifier.nodes().empty()) {
        std::cout << "no audit records\n";
      }
    } else if (*decrypt) {
      std::string b64 = Trim(decrypt->count("--data") ? data : ReadStdin());
      absl::StatusOr<std::vector<uint8_t>> raw = kms::Base64Decode(b64);
      if (!raw.ok()) throw Failure{2, "ciphertext is not valid Base64"};
      grpc::ClientContext ctx;
      SetDeadline(ctx, conn);
      kms::v1::DecryptRequest req;
      key_choice.Set(&req);
      req.set_ciphertext(std::string(raw->begin(), raw->end()));
      ParseContext(context, req.mutable_context());
      kms::v1::DecryptResponse resp;
      Check(keys->Decrypt(&ctx, req, &resp));
      if (as_json) {
        std::cout << json{{"plaintext_base64",
                           kms::Base64Encode({reinterpret_cast<const uint8_t*>(resp.plaintext().data()),
                                              resp.plaintext().size()})},
                          {"dek_version", resp.dek_version()}}
                         .dump(2)
                  << "\n";
      } else {
        std::cout << resp.plaintext();
        if (isatty(STDOUT_FILENO)) std::cout << "\n";
      }
    }
  } catch (const Failure& f) {
    std::cerr << "kmsctl: " << f.message << "\n";
    return f.exit_code;
  }
  return 0;
}
