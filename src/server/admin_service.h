// kms.v1.AdminService: the operators' plane (kmsctl).
#pragma once

#include <chrono>
#include <string>

#include "src/server/rpc_auth.h"
#include "kms/common/clock.h"
#include "kms/hsm/hsm.h"
#include "kms/store/key_store.h"
#include "kms/v1/admin_service.grpc.pb.h"
#include "src/jwt/jwt_service.h"
#include "src/keys/key_manager.h"
#include "src/sched/scheduler_status.h"

namespace kms::server {

struct NodeInfo {
  std::string node_id;
  std::string version;
  std::string store_backend;
  std::string master_key_kind;
  int64_t started_at_unix = 0;
};

class AdminServiceImpl final : public kms::v1::AdminService::CallbackService {
 public:
  AdminServiceImpl(keys::KeyManager& keys, jwt::JwtService& jwt, hsm::Hsm& hsm,
                   store::KeyStore& store,
                   const CallGate& gate, const sched::SchedulerStatus& coordinator,
                   const Clock& clock, NodeInfo node)
      : keys_(keys),
        jwt_(jwt),
        hsm_(hsm),
        store_(store),
        gate_(gate),
        coordinator_(coordinator),
        clock_(clock),
        node_(std::move(node)) {}

  grpc::ServerUnaryReactor* CreateTenant(grpc::CallbackServerContext* ctx,
                                         const v1::CreateTenantRequest* req,
                                         v1::CreateTenantResponse* resp) override;
  grpc::ServerUnaryReactor* GetTenant(grpc::CallbackServerContext* ctx,
                                      const v1::GetTenantRequest* req,
                                      v1::GetTenantResponse* resp) override;
  grpc::ServerUnaryReactor* ListTenants(grpc::CallbackServerContext* ctx,
                                        const v1::ListTenantsRequest* req,
                                        v1::ListTenantsResponse* resp) override;
  grpc::ServerUnaryReactor* RotateTenantKey(grpc::CallbackServerContext* ctx,
                                            const v1::RotateTenantKeyRequest* req,
                                            v1::RotateTenantKeyResponse* resp) override;
  grpc::ServerUnaryReactor* ShredTenant(grpc::CallbackServerContext* ctx,
                                        const v1::ShredTenantRequest* req,
                                        v1::ShredTenantResponse* resp) override;
  grpc::ServerUnaryReactor* RotateKek(grpc::CallbackServerContext* ctx,
                                      const v1::RotateKekRequest* req,
                                      v1::RotateKekResponse* resp) override;
  grpc::ServerUnaryReactor* GetJwtStatus(grpc::CallbackServerContext* ctx,
                                         const v1::GetJwtStatusRequest* req,
                                         v1::GetJwtStatusResponse* resp) override;
  grpc::ServerUnaryReactor* RotateJwtKey(grpc::CallbackServerContext* ctx,
                                         const v1::RotateJwtKeyRequest* req,
                                         v1::RotateJwtKeyResponse* resp) override;
  grpc::ServerUnaryReactor* AckJwtCritical(grpc::CallbackServerContext* ctx,
                                           const v1::AckJwtCriticalRequest* req,
                                           v1::AckJwtCriticalResponse* resp) override;
  grpc::ServerUnaryReactor* GetStatus(grpc::CallbackServerContext* ctx,
                                      const v1::GetStatusRequest* req,
                                      v1::GetStatusResponse* resp) override;

 private:
  absl::Status Status(v1::GetStatusResponse* resp);

  keys::KeyManager& keys_;
  jwt::JwtService& jwt_;
  hsm::Hsm& hsm_;
  store::KeyStore& store_;
  const CallGate& gate_;
  const sched::SchedulerStatus& coordinator_;  // leadership, bus health
  const Clock& clock_;
  const NodeInfo node_;
};

}  // namespace kms::server
