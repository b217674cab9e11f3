#include "src/server/grpc/admin_service.h"

#include "spdlog/spdlog.h"
#include "src/common/log.h"
#include "src/keys/tenant_id.h"
#include "src/server/grpc/unary.h"

namespace kms::server {

namespace {

constexpr int kDefaultPageSize = 100;
constexpr int kMaxPageSize = 1000;
// Admin requests hold a tenant id or two and a few numbers.
constexpr size_t kMaxAdminRequestBytes = 16 * 1024;

void FillTenant(const keys::TenantInfo& info, v1::Tenant* out) {
  out->set_tenant_id(info.tenant.id);
  out->set_state(std::string(store::TenantStateName(info.tenant.state)));
  out->set_primary_dek_version(info.tenant.primary_dek_version);
  out->set_min_decrypt_version(info.tenant.min_decrypt_version);
  out->set_created_at_unix(info.tenant.created_at);
  out->set_dek_created_at_unix(info.primary_dek_created_at);
}

}  // namespace

absl::StatusOr<keys::TenantId> AdminServiceImpl::Admit(const std::string& identity,
                                                       authz::Operation op,
                                                       const std::string& tenant) const {
  KMS_ASSIGN_OR_RETURN(keys::TenantId id, keys::TenantId::Parse(tenant));
  KMS_RETURN_IF_ERROR(gate_.Admit(identity, op, id.str()));
  return id;
}

grpc::ServerUnaryReactor* AdminServiceImpl::CreateTenant(grpc::CallbackServerContext* ctx,
                                                         const grpc::ByteBuffer* in,
                                                         grpc::ByteBuffer* out) {
  return ServeUnary<v1::CreateTenantRequest, v1::CreateTenantResponse>(
      ctx, in, out, kMaxAdminRequestBytes, "CreateTenant",
      [&](const std::string& identity, const v1::CreateTenantRequest& req,
          v1::CreateTenantResponse* resp) -> absl::Status {
        KMS_ASSIGN_OR_RETURN(keys::TenantId tenant,
                             Admit(identity, authz::Operation::kCreateTenant, req.tenant_id()));
        KMS_ASSIGN_OR_RETURN(keys::TenantInfo info, keys_.CreateTenant(tenant));
        FillTenant(info, resp->mutable_tenant());
        LogEvent(spdlog::level::info, "tenant_created", {{"tenant", tenant.str()}, {"by", identity}});
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* AdminServiceImpl::GetTenant(grpc::CallbackServerContext* ctx,
                                                      const grpc::ByteBuffer* in,
                                                      grpc::ByteBuffer* out) {
  return ServeUnary<v1::GetTenantRequest, v1::GetTenantResponse>(
      ctx, in, out, kMaxAdminRequestBytes, "GetTenant",
      [&](const std::string& identity, const v1::GetTenantRequest& req,
          v1::GetTenantResponse* resp) -> absl::Status {
        KMS_ASSIGN_OR_RETURN(keys::TenantId tenant,
                             Admit(identity, authz::Operation::kGetTenant, req.tenant_id()));
        KMS_ASSIGN_OR_RETURN(keys::TenantInfo info, keys_.GetTenant(tenant));
        FillTenant(info, resp->mutable_tenant());
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* AdminServiceImpl::ListTenants(grpc::CallbackServerContext* ctx,
                                                        const grpc::ByteBuffer* in,
                                                        grpc::ByteBuffer* out) {
  return ServeUnary<v1::ListTenantsRequest, v1::ListTenantsResponse>(
      ctx, in, out, kMaxAdminRequestBytes, "ListTenants",
      [&](const std::string& identity, const v1::ListTenantsRequest& req,
          v1::ListTenantsResponse* resp) -> absl::Status {
        KMS_RETURN_IF_ERROR(
            gate_.Admit(identity, authz::Operation::kListTenants, CallGate::kEveryTenant));
        const int page_size = req.page_size() == 0 ? kDefaultPageSize : req.page_size();
        if (page_size < 0 || page_size > kMaxPageSize) {
          return absl::InvalidArgumentError("page_size must be between 0 and 1000");
        }
        // The page token is the last tenant id of the previous page.
        if (!req.page_token().empty()) {
          KMS_RETURN_IF_ERROR(keys::TenantId::Parse(req.page_token()).status());
        }
        KMS_ASSIGN_OR_RETURN(store::TenantPage page, keys_.ListTenants(req.page_token(), page_size));
        for (store::TenantRecord& t : page.tenants) {
          FillTenant(keys::TenantInfo{.tenant = std::move(t)}, resp->add_tenants());
        }
        resp->set_next_page_token(page.next_after);
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* AdminServiceImpl::RotateTenantKey(grpc::CallbackServerContext* ctx,
                                                            const grpc::ByteBuffer* in,
                                                            grpc::ByteBuffer* out) {
  return ServeUnary<v1::RotateTenantKeyRequest, v1::RotateTenantKeyResponse>(
      ctx, in, out, kMaxAdminRequestBytes, "RotateTenantKey",
      [&](const std::string& identity, const v1::RotateTenantKeyRequest& req,
          v1::RotateTenantKeyResponse* resp) -> absl::Status {
        KMS_ASSIGN_OR_RETURN(keys::TenantId tenant,
                             Admit(identity, authz::Operation::kRotate, req.tenant_id()));
        KMS_ASSIGN_OR_RETURN(keys::TenantInfo info, keys_.RotateTenantDek(tenant));
        FillTenant(info, resp->mutable_tenant());
        LogEvent(spdlog::level::info, "tenant_dek_rotated",
                 {{"tenant", tenant.str()},
                  {"dek_version", std::to_string(info.tenant.primary_dek_version)},
                  {"by", identity}});
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* AdminServiceImpl::ShredTenant(grpc::CallbackServerContext* ctx,
                                                        const grpc::ByteBuffer* in,
                                                        grpc::ByteBuffer* out) {
  return ServeUnary<v1::ShredTenantRequest, v1::ShredTenantResponse>(
      ctx, in, out, kMaxAdminRequestBytes, "ShredTenant",
      [&](const std::string& identity, const v1::ShredTenantRequest& req,
          v1::ShredTenantResponse*) -> absl::Status {
        KMS_ASSIGN_OR_RETURN(keys::TenantId tenant,
                             Admit(identity, authz::Operation::kShred, req.tenant_id()));
        if (req.confirm_tenant_id() != req.tenant_id()) {
          return absl::InvalidArgumentError("confirm_tenant_id must repeat tenant_id");
        }
        KMS_RETURN_IF_ERROR(keys_.ShredTenant(tenant));
        spdlog::warn("tenant {} shredded by {}", tenant.str(), identity);
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* AdminServiceImpl::RotateKek(grpc::CallbackServerContext* ctx,
                                                      const grpc::ByteBuffer* in,
                                                      grpc::ByteBuffer* out) {
  return ServeUnary<v1::RotateKekRequest, v1::RotateKekResponse>(
      ctx, in, out, kMaxAdminRequestBytes, "RotateKek",
      [&](const std::string& identity, const v1::RotateKekRequest&,
          v1::RotateKekResponse* resp) -> absl::Status {
        KMS_RETURN_IF_ERROR(
            gate_.Admit(identity, authz::Operation::kRotate, CallGate::kEveryTenant));
        KMS_ASSIGN_OR_RETURN(uint32_t version, kek_ring_.Rotate());
        resp->set_primary_kek_version(version);
        spdlog::info("KEK rotated to version {} by {}", version, identity);
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* AdminServiceImpl::GetJwtStatus(grpc::CallbackServerContext* ctx,
                                                         const grpc::ByteBuffer* in,
                                                         grpc::ByteBuffer* out) {
  return ServeUnary<v1::GetJwtStatusRequest, v1::GetJwtStatusResponse>(
      ctx, in, out, kMaxAdminRequestBytes, "GetJwtStatus",
      [&](const std::string& identity, const v1::GetJwtStatusRequest&,
          v1::GetJwtStatusResponse* resp) -> absl::Status {
        KMS_RETURN_IF_ERROR(gate_.Admit(identity, authz::Operation::kAdminJwt, ""));
        jwt::JwtServiceStatus s = jwt_.Status();
        resp->set_state(s.state_name);
        resp->set_signing_kid(s.signing_kid);
        resp->set_degraded_since_unix(s.degraded_since);
        resp->set_backends_ok(s.backends_ok);
        resp->set_last_error(s.last_error);
        resp->set_next_rotation_at_unix(s.next_rotation_at);
        for (const jwt::JwtKeyStatus& k : s.keys) {
          v1::JwtKeyInfo* info = resp->add_keys();
          info->set_kid(k.kid);
          info->set_phase(k.phase);
          info->set_created_at_unix(k.created_at);
          info->set_activate_at_unix(k.activate_at);
          info->set_retire_at_unix(k.retire_at);
          info->set_kek_version(k.kek_version);
        }
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* AdminServiceImpl::RotateJwtKey(grpc::CallbackServerContext* ctx,
                                                         const grpc::ByteBuffer* in,
                                                         grpc::ByteBuffer* out) {
  return ServeUnary<v1::RotateJwtKeyRequest, v1::RotateJwtKeyResponse>(
      ctx, in, out, kMaxAdminRequestBytes, "RotateJwtKey",
      [&](const std::string& identity, const v1::RotateJwtKeyRequest&,
          v1::RotateJwtKeyResponse* resp) -> absl::Status {
        KMS_RETURN_IF_ERROR(gate_.Admit(identity, authz::Operation::kAdminJwt, ""));
        KMS_ASSIGN_OR_RETURN(jwt::RotationResult rotated, jwt_.Rotate());
        resp->set_new_kid(rotated.new_kid);
        resp->set_new_activate_at_unix(rotated.new_activate_at);
        resp->set_old_kid(rotated.old_kid);
        resp->set_old_retire_at_unix(rotated.old_retire_at);
        LogEvent(spdlog::level::info, "jwt_rotation_started",
                 {{"by", identity},
                  {"new_kid", rotated.new_kid},
                  {"signs_from", std::to_string(rotated.new_activate_at)}});
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* AdminServiceImpl::AckJwtCritical(grpc::CallbackServerContext* ctx,
                                                           const grpc::ByteBuffer* in,
                                                           grpc::ByteBuffer* out) {
  return ServeUnary<v1::AckJwtCriticalRequest, v1::AckJwtCriticalResponse>(
      ctx, in, out, kMaxAdminRequestBytes, "AckJwtCritical",
      [&](const std::string& identity, const v1::AckJwtCriticalRequest&,
          v1::AckJwtCriticalResponse* resp) -> absl::Status {
        KMS_RETURN_IF_ERROR(gate_.Admit(identity, authz::Operation::kAdminJwt, ""));
        KMS_RETURN_IF_ERROR(jwt_.Ack());
        LogEvent(spdlog::level::info, "jwt_critical_acknowledged", {{"by", identity}});
        resp->set_state(jwt_.Status().state_name);
        return absl::OkStatus();
      });
}

absl::Status AdminServiceImpl::Status(v1::GetStatusResponse* resp) {
  const int64_t now = clock_.UnixSeconds();
  resp->set_version(node_.version);
  resp->set_node_id(node_.node_id);
  resp->set_uptime_seconds(now - node_.started_at_unix);
  resp->set_master_key_kind(node_.master_key_kind);
  resp->set_store_backend(node_.store_backend);
  resp->set_primary_kek_version(keys_.primary_kek_version());
  resp->set_dek_cache_entries(keys_.cached_deks());

  absl::Status hsm_health = kek_ring_.Ping();
  absl::Status store_health = store_.Ping();
  auto add_backend = [&](const char* name, const absl::Status& s) {
    v1::BackendState* b = resp->add_backends();
    b->set_name(name);
    b->set_healthy(s.ok());
    b->set_detail(s.ok() ? "ok" : std::string(absl::StatusCodeToString(s.code())));
  };
  add_backend("hsm", hsm_health);
  add_backend("store", store_health);
  if (scheduler_.has_bus()) {
    add_backend("redis", scheduler_.bus_healthy() ? absl::OkStatus()
                                                    : absl::UnavailableError("unreachable"));
  }
  if (audit_health_) add_backend("audit", audit_health_());
  resp->set_leader(scheduler_.is_leader());
  resp->set_jwt_state(jwt_.Status().state_name);
  resp->set_ready(hsm_health.ok() && store_health.ok());

  if (store_health.ok()) {
    KMS_ASSIGN_OR_RETURN(std::vector<keys::KekInfo> keks, kek_ring_.List());
    for (const keys::KekInfo& k : keks) {
      v1::KekVersion* kv = resp->add_kek_versions();
      kv->set_version(k.version);
      kv->set_state(std::string(store::KekStateName(k.state)));
      kv->set_created_at_unix(k.created_at);
      kv->set_age_seconds(now - k.created_at);
      kv->set_wrap_mechanism(k.mechanism);
    }
    KMS_ASSIGN_OR_RETURN(uint64_t tenants, store_.CountTenants());
    resp->set_tenant_count(tenants);
  }
  return absl::OkStatus();
}

grpc::ServerUnaryReactor* AdminServiceImpl::GetStatus(grpc::CallbackServerContext* ctx,
                                                      const grpc::ByteBuffer* in,
                                                      grpc::ByteBuffer* out) {
  return ServeUnary<v1::GetStatusRequest, v1::GetStatusResponse>(
      ctx, in, out, kMaxAdminRequestBytes, "GetStatus",
      [&](const std::string& identity, const v1::GetStatusRequest&,
          v1::GetStatusResponse* resp) -> absl::Status {
        KMS_RETURN_IF_ERROR(gate_.Admit(identity, authz::Operation::kGetStatus, ""));
        return Status(resp);
      });
}

grpc::ServerUnaryReactor* AdminServiceImpl::ReadAudit(grpc::CallbackServerContext* ctx,
                                                      const grpc::ByteBuffer* in,
                                                      grpc::ByteBuffer* out) {
  return ServeUnary<v1::ReadAuditRequest, v1::ReadAuditResponse>(
      ctx, in, out, kMaxAdminRequestBytes, "ReadAudit",
      [&](const std::string& identity, const v1::ReadAuditRequest& req,
          v1::ReadAuditResponse* resp) -> absl::Status {
        KMS_RETURN_IF_ERROR(
            gate_.Admit(identity, authz::Operation::kReadAudit, CallGate::kEveryTenant));
        if (audit_store_ == nullptr) return absl::UnavailableError("the audit log is off");
        const int limit = req.limit() == 0 ? kDefaultPageSize : req.limit();
        if (limit < 0 || limit > kMaxPageSize || req.tail() < 0 || req.tail() > kMaxPageSize) {
          return absl::InvalidArgumentError("limit and tail must be between 0 and 1000");
        }
        if (req.after_id() < 0) return absl::InvalidArgumentError("after_id must not be negative");
        KMS_ASSIGN_OR_RETURN(std::vector<store::AuditRecord> records,
                             req.tail() > 0
                                 ? audit_store_->TailAudit(req.tail(), req.node_id())
                                 : audit_store_->ReadAudit(req.after_id(), limit, req.node_id()));
        for (store::AuditRecord& r : records) {
          v1::AuditRecord* a = resp->add_records();
          a->set_id(r.id);
          a->set_node_id(std::move(r.node));
          a->set_seq(r.seq);
          a->set_at_unix_ms(r.at_ms);
          a->set_kind(std::move(r.kind));
          a->set_identity(std::move(r.identity));
          a->set_operation(std::move(r.operation));
          a->set_tenant_id(std::move(r.tenant));
          a->set_tenants(r.tenants);
          a->set_calls(r.calls);
          a->set_key_versions(std::move(r.key_versions));
          a->set_outcome(std::move(r.outcome));
          a->set_request_id(std::move(r.request_id));
          a->set_prev_hash(r.prev_hash.data(), r.prev_hash.size());
          a->set_hash(r.hash.data(), r.hash.size());
        }
        return absl::OkStatus();
      });
}

}  // namespace kms::server
