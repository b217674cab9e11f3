// Shared by the end-to-end suites: mTLS channels to a kmsd whose dev state dir holds the
// CA and client certificates, deadlines, and a kmsctl command line.
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <utility>
#include <vector>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "nlohmann/json.hpp"
#include "tests/test_common/kmsd_process.h"

namespace kms::e2e {

// A channel to `addr` as dev client `client` ("operator", "billing", "iam", ...); an
// empty `client` presents no certificate.
inline std::shared_ptr<grpc::Channel> DevChannel(const std::string& state_dir, const std::string& addr,
                                                 const std::string& client) {
  grpc::SslCredentialsOptions tls;
  tls.pem_root_certs = test::ReadFileOrEmpty(state_dir + "/pki/ca.pem");
  if (!client.empty()) {
    tls.pem_cert_chain = test::ReadFileOrEmpty(state_dir + "/pki/clients/" + client + ".pem");
    tls.pem_private_key = test::ReadFileOrEmpty(state_dir + "/pki/clients/" + client + ".key");
  }
  return grpc::CreateChannel(addr, grpc::SslCredentials(tls));
}

inline void Deadline(grpc::ClientContext& ctx, std::chrono::seconds timeout = std::chrono::seconds(20)) {
  ctx.set_deadline(std::chrono::system_clock::now() + timeout);
}

// A unary call with raw request bytes through the generic stub (to send what a typed
// stub cannot: undecodable messages, other services): the status and the response bytes.
inline std::pair<grpc::Status, std::string> RawCall(
    const std::shared_ptr<grpc::Channel>& channel, const std::string& method,
    const std::string& request_bytes, std::chrono::seconds timeout = std::chrono::seconds(20)) {
  grpc::GenericStub stub(channel);
  grpc::ClientContext ctx;
  Deadline(ctx, timeout);
  grpc::Slice slice(request_bytes.data(), request_bytes.size());
  grpc::ByteBuffer request(&slice, 1);
  grpc::ByteBuffer response;
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  grpc::Status status;
  stub.UnaryCall(&ctx, method, grpc::StubOptions(), &request, &response, [&](grpc::Status s) {
    std::lock_guard lock(mu);
    status = s;
    done = true;
    cv.notify_all();
  });
  std::unique_lock lock(mu);
  cv.wait(lock, [&] { return done; });
  std::string bytes;
  std::vector<grpc::Slice> slices;
  if (status.ok() && response.Dump(&slices).ok()) {
    for (const auto& sl : slices) bytes.append(reinterpret_cast<const char*>(sl.begin()), sl.size());
  }
  return {status, bytes};
}

// `kmsctl ARGS` as the operator of the node whose kmsctl.json the state dir holds.
inline std::string KmsctlCommand(const std::string& state_dir, const std::string& args) {
  return absl::StrCat("KMSCTL_CONFIG=", state_dir, "/kmsctl.json ", KMSCTL_BINARY, " ", args);
}

// A config-file-mode configuration that serves from a dev state dir's files (token,
// certificates, policy) with its own SQLite database and any free gRPC port; tests add
// or change sections before writing it.
inline nlohmann::json DevStateConfig(const std::string& state, const std::string& sqlite_path) {
  return {{"node_id", "config-mode"},
          {"grpc", {{"listen", "127.0.0.1:0"}}},
          {"http", {{"listen", ""}}},
          {"tls", {{"cert_file", state + "/pki/server.pem"}, {"key_file", state + "/pki/server.key"},
                   {"client_ca_file", state + "/pki/ca.pem"}}},
          {"hsm", {{"token_label", "kmsd-dev"}, {"pin_file", state + "/secrets/hsm-user.pin"},
                   {"softhsm2_conf", state + "/softhsm2.conf"}}},
          {"store", {{"backend", "sqlite"}, {"sqlite", {{"path", sqlite_path}}}}},
          {"policy_file", state + "/policy.json"}};
}

}  // namespace kms::e2e
