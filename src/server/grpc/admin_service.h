// kms.v1.AdminService: the operators' plane (kmsctl), on the gRPC callback API with
// raw methods (grpc/unary.h).
#pragma once

#include <chrono>
#include <functional>
#include <string>

#include "kms/common/clock.h"
#include "kms/store/audit_store.h"
#include "kms/store/key_store.h"
#include "kms/v1/admin_service.grpc.pb.h"
#include "src/jwt/jwt_service.h"
#include "src/keys/kek_ring.h"
#include "src/keys/key_manager.h"
#include "src/keys/key_ref.h"
#include "src/sched/health_state.h"
#include "src/sched/rotation.h"
#include "src/sched/scheduler_status.h"
#include "src/server/gate/call_gate.h"

namespace kms::server {

struct NodeInfo {
  std::string node_id;
  std::string version;
  std::string store_backend;
  std::string master_key_kind;
  int64_t started_at_unix = 0;
};

using AdminServiceRaw = v1::AdminService::WithRawCallbackMethod_CreateTenants<
    v1::AdminService::WithRawCallbackMethod_CreateTenant<
    v1::AdminService::WithRawCallbackMethod_GetTenant<
        v1::AdminService::WithRawCallbackMethod_ListTenants<
            v1::AdminService::WithRawCallbackMethod_GetStatus<
                v1::AdminService::WithRawCallbackMethod_RotateTenantKey<
                    v1::AdminService::WithRawCallbackMethod_ShredTenant<
                        v1::AdminService::WithRawCallbackMethod_RotateKek<
                            v1::AdminService::WithRawCallbackMethod_GetJwtStatus<
                                v1::AdminService::WithRawCallbackMethod_RotateJwtKey<
                                    v1::AdminService::WithRawCallbackMethod_AckJwtCritical<
                                        v1::AdminService::WithRawCallbackMethod_SetMinDecryptVersion<
                                            v1::AdminService::WithRawCallbackMethod_ListKeys<
                                                v1::AdminService::WithRawCallbackMethod_GetRotationJob<
                                                    v1::AdminService::WithRawCallbackMethod_ReadAudit<
                                                        v1::AdminService::WithRawCallbackMethod_RotateBlindIndexKey<
                                                            v1::AdminService::WithRawCallbackMethod_FinishBlindIndexRotation<
                                                                v1::AdminService::Service>>>>>>>>>>>>>>>>>;

class AdminServiceImpl final : public AdminServiceRaw {
 public:
  AdminServiceImpl(keys::KeyManager& keys, keys::HsmKekRing& kek_ring, jwt::JwtService& jwt,
                   store::KeyStore& store,
                   const CallGate& gate, const sched::SchedulerStatus& scheduler,
                   const Clock& clock, NodeInfo node)
      : keys_(keys),
        kek_ring_(kek_ring),
        jwt_(jwt),
        store_(store),
        gate_(gate),
        scheduler_(scheduler),
        clock_(clock),
        node_(std::move(node)) {}

  grpc::ServerUnaryReactor* CreateTenant(grpc::CallbackServerContext* ctx,
                                         const grpc::ByteBuffer* req, grpc::ByteBuffer* resp) override;
  grpc::ServerUnaryReactor* CreateTenants(grpc::CallbackServerContext* ctx,
                                          const grpc::ByteBuffer* req, grpc::ByteBuffer* resp) override;
  grpc::ServerUnaryReactor* GetTenant(grpc::CallbackServerContext* ctx,
                                      const grpc::ByteBuffer* req, grpc::ByteBuffer* resp) override;
  grpc::ServerUnaryReactor* ListTenants(grpc::CallbackServerContext* ctx,
                                        const grpc::ByteBuffer* req, grpc::ByteBuffer* resp) override;
  grpc::ServerUnaryReactor* RotateTenantKey(grpc::CallbackServerContext* ctx,
                                            const grpc::ByteBuffer* req, grpc::ByteBuffer* resp) override;
  grpc::ServerUnaryReactor* ShredTenant(grpc::CallbackServerContext* ctx,
                                        const grpc::ByteBuffer* req, grpc::ByteBuffer* resp) override;
  grpc::ServerUnaryReactor* RotateKek(grpc::CallbackServerContext* ctx,
                                      const grpc::ByteBuffer* req, grpc::ByteBuffer* resp) override;
  grpc::ServerUnaryReactor* GetRotationJob(grpc::CallbackServerContext* ctx,
                                           const grpc::ByteBuffer* req, grpc::ByteBuffer* resp) override;
  grpc::ServerUnaryReactor* GetJwtStatus(grpc::CallbackServerContext* ctx,
                                         const grpc::ByteBuffer* req, grpc::ByteBuffer* resp) override;
  grpc::ServerUnaryReactor* RotateJwtKey(grpc::CallbackServerContext* ctx,
                                         const grpc::ByteBuffer* req, grpc::ByteBuffer* resp) override;
  grpc::ServerUnaryReactor* AckJwtCritical(grpc::CallbackServerContext* ctx,
                                           const grpc::ByteBuffer* req, grpc::ByteBuffer* resp) override;
  grpc::ServerUnaryReactor* GetStatus(grpc::CallbackServerContext* ctx,
                                      const grpc::ByteBuffer* req, grpc::ByteBuffer* resp) override;
  grpc::ServerUnaryReactor* SetMinDecryptVersion(grpc::CallbackServerContext* ctx,
                                                 const grpc::ByteBuffer* req,
                                                 grpc::ByteBuffer* resp) override;
  grpc::ServerUnaryReactor* ListKeys(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* req,
                                     grpc::ByteBuffer* resp) override;
  grpc::ServerUnaryReactor* RotateBlindIndexKey(grpc::CallbackServerContext* ctx,
                                                const grpc::ByteBuffer* req,
                                                grpc::ByteBuffer* resp) override;
  grpc::ServerUnaryReactor* FinishBlindIndexRotation(grpc::CallbackServerContext* ctx,
                                                     const grpc::ByteBuffer* req,
                                                     grpc::ByteBuffer* resp) override;

  // The health source GetStatus reports (ready, degraded, backends); set before serving.
  // Without one, GetStatus probes the backends itself on the request thread.
  void set_health(const sched::HealthState* health) { health_ = health; }

  // The rotation service (RotateKek, GetRotationJob, GetStatus's rotations); set before
  // serving. Without it those RPCs are UNAVAILABLE.
  void SetRotation(sched::RotationService* rotation) { rotation_ = rotation; }
  grpc::ServerUnaryReactor* ReadAudit(grpc::CallbackServerContext* ctx,
                                      const grpc::ByteBuffer* req, grpc::ByteBuffer* resp) override;

  // The audit store ReadAudit reads (null: ReadAudit is UNAVAILABLE). Set before serving.
  void set_audit_store(store::AuditStore* audit_store) { audit_store_ = audit_store; }
  // The audit log's health for GetStatus (backend "audit"); unset: not shown.
  void set_audit_health(std::function<absl::Status()> health) { audit_health_ = std::move(health); }

 private:
  absl::Status Status(v1::GetStatusResponse* resp);
  absl::Status Keys(const v1::ListKeysRequest& req, v1::ListKeysResponse* resp);
  absl::Status ListNamedKeys(const v1::ListTenantsRequest& req, int page_size,
                             v1::ListTenantsResponse* resp);
  // The tenant checked and admitted for `op`.
  absl::StatusOr<keys::TenantId> Admit(const std::string& identity, authz::Operation op,
                                       const std::string& tenant) const;
  // The tenant or named key (exactly one of the request's two fields) admitted for `op`.
  absl::StatusOr<keys::KeyRef> AdmitKey(const std::string& identity, authz::Operation op,
                                        const std::string& tenant_id,
                                        const std::string& key_name) const;

  keys::KeyManager& keys_;
  keys::HsmKekRing& kek_ring_;
  jwt::JwtService& jwt_;
  store::KeyStore& store_;
  const CallGate& gate_;
  const sched::SchedulerStatus& scheduler_;  // leadership, bus health
  const Clock& clock_;
  const NodeInfo node_;
  const sched::HealthState* health_ = nullptr;
  sched::RotationService* rotation_ = nullptr;
  store::AuditStore* audit_store_ = nullptr;
  std::function<absl::Status()> audit_health_;
};

}  // namespace kms::server
