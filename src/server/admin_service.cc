#include "src/server/admin_service.h"

#include "spdlog/spdlog.h"
#include "src/keys/tenant_id.h"
#include "src/server/rpc_auth.h"
#include "src/server/status_map.h"

namespace kms::server {

namespace {

constexpr int kDefaultPageSize = 100;
constexpr int kMaxPageSize = 1000;

void FillTenant(const keys::TenantInfo& info, v1::Tenant* out) {
  out->set_tenant_id(info.tenant.id);
  out->set_state(std::string(store::TenantStateName(info.tenant.state)));
  out->set_primary_dek_version(info.tenant.primary_dek_version);
  out->set_min_decrypt_version(info.tenant.min_decrypt_version);
  out->set_created_at_unix(info.tenant.created_at);
  out->set_dek_created_at_unix(info.primary_dek_created_at);
}

}  // namespace

grpc::ServerUnaryReactor* AdminServiceImpl::CreateTenant(grpc::CallbackServerContext* ctx,
                                                         const v1::CreateTenantRequest* req,
                                                         v1::CreateTenantResponse* resp) {
  absl::Status status = keys::ValidateTenantId(req->tenant_id());
  std::string identity;
  if (status.ok()) {
    status = gate_.Admit(*ctx, authz::Operation::kCreateTenant, req->tenant_id(), &identity);
  }
  if (status.ok()) {
    absl::StatusOr<keys::TenantInfo> info = keys_.CreateTenant(req->tenant_id());
    status = info.status();
    if (info.ok()) {
      FillTenant(*info, resp->mutable_tenant());
      spdlog::info("tenant {} created by {}", req->tenant_id(), identity);
    }
  }
  return FinishUnary(ctx, status, "CreateTenant");
}

grpc::ServerUnaryReactor* AdminServiceImpl::GetTenant(grpc::CallbackServerContext* ctx,
                                                      const v1::GetTenantRequest* req,
                                                      v1::GetTenantResponse* resp) {
  absl::Status status = keys::ValidateTenantId(req->tenant_id());
  if (status.ok()) status = gate_.Admit(*ctx, authz::Operation::kGetTenant, req->tenant_id());
  if (status.ok()) {
    absl::StatusOr<keys::TenantInfo> info = keys_.GetTenant(req->tenant_id());
    status = info.status();
    if (info.ok()) FillTenant(*info, resp->mutable_tenant());
  }
  return FinishUnary(ctx, status, "GetTenant");
}

grpc::ServerUnaryReactor* AdminServiceImpl::ListTenants(grpc::CallbackServerContext* ctx,
                                                        const v1::ListTenantsRequest* req,
                                                        v1::ListTenantsResponse* resp) {
  absl::Status status = gate_.Admit(*ctx, authz::Operation::kListTenants, CallGate::kEveryTenant);
  int page_size = req->page_size() == 0 ? kDefaultPageSize : req->page_size();
  if (status.ok() && (page_size < 0 || page_size > kMaxPageSize)) {
    status = absl::InvalidArgumentError("page_size must be between 0 and 1000");
  }
  // The page token is the last tenant id of the previous page.
  if (status.ok() && !req->page_token().empty()) status = keys::ValidateTenantId(req->page_token());
  if (status.ok()) {
    absl::StatusOr<store::TenantPage> page = keys_.ListTenants(req->page_token(), page_size);
    status = page.status();
    if (page.ok()) {
      for (store::TenantRecord& t : page->tenants) {
        FillTenant(keys::TenantInfo{.tenant = std::move(t)}, resp->add_tenants());
      }
      resp->set_next_page_token(page->next_after);
    }
  }
  return FinishUnary(ctx, status, "ListTenants");
}

grpc::ServerUnaryReactor* AdminServiceImpl::RotateTenantKey(grpc::CallbackServerContext* ctx,
                                                            const v1::RotateTenantKeyRequest* req,
                                                            v1::RotateTenantKeyResponse* resp) {
  absl::Status status = keys::ValidateTenantId(req->tenant_id());
  std::string identity;
  if (status.ok()) {
    status = gate_.Admit(*ctx, authz::Operation::kRotate, req->tenant_id(), &identity);
  }
  if (status.ok()) {
    absl::StatusOr<keys::TenantInfo> info = keys_.RotateTenantDek(req->tenant_id());
    status = info.status();
    if (info.ok()) {
      FillTenant(*info, resp->mutable_tenant());
      spdlog::info("tenant {} DEK rotated to version {} by {}", req->tenant_id(),
                   info->tenant.primary_dek_version, identity);
    }
  }
  return FinishUnary(ctx, status, "RotateTenantKey");
}

grpc::ServerUnaryReactor* AdminServiceImpl::ShredTenant(grpc::CallbackServerContext* ctx,
                                                        const v1::ShredTenantRequest* req,
                                                        v1::ShredTenantResponse* resp) {
  absl::Status status = keys::ValidateTenantId(req->tenant_id());
  std::string identity;
  if (status.ok()) {
    status = gate_.Admit(*ctx, authz::Operation::kShred, req->tenant_id(), &identity);
  }
  if (status.ok() && req->confirm_tenant_id() != req->tenant_id()) {
    status = absl::InvalidArgumentError("confirm_tenant_id must repeat tenant_id");
  }
  if (status.ok()) {
    status = keys_.ShredTenant(req->tenant_id());
    if (status.ok()) spdlog::warn("tenant {} shredded by {}", req->tenant_id(), identity);
  }
  return FinishUnary(ctx, status, "ShredTenant");
}

grpc::ServerUnaryReactor* AdminServiceImpl::RotateKek(grpc::CallbackServerContext* ctx,
                                                      const v1::RotateKekRequest* req,
                                                      v1::RotateKekResponse* resp) {
  std::string identity;
  absl::Status status =
      gate_.Admit(*ctx, authz::Operation::kRotate, CallGate::kEveryTenant, &identity);
  if (status.ok()) {
    absl::StatusOr<uint32_t> version = kek_ring_.Rotate();
    status = version.status();
    if (version.ok()) {
      resp->set_primary_kek_version(*version);
      spdlog::info("KEK rotated to version {} by {}", *version, identity);
    }
  }
  return FinishUnary(ctx, status, "RotateKek");
}

grpc::ServerUnaryReactor* AdminServiceImpl::GetJwtStatus(grpc::CallbackServerContext* ctx,
                                                         const v1::GetJwtStatusRequest* req,
                                                         v1::GetJwtStatusResponse* resp) {
  absl::Status status = gate_.Admit(*ctx, authz::Operation::kAdminJwt, "");
  if (status.ok()) {
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
  }
  return FinishUnary(ctx, status, "GetJwtStatus");
}

grpc::ServerUnaryReactor* AdminServiceImpl::RotateJwtKey(grpc::CallbackServerContext* ctx,
                                                         const v1::RotateJwtKeyRequest* req,
                                                         v1::RotateJwtKeyResponse* resp) {
  std::string identity;
  absl::Status status = gate_.Admit(*ctx, authz::Operation::kAdminJwt, "", &identity);
  if (status.ok()) {
    absl::StatusOr<jwt::RotationResult> rotated = jwt_.Rotate();
    status = rotated.status();
    if (rotated.ok()) {
      resp->set_new_kid(rotated->new_kid);
      resp->set_new_activate_at_unix(rotated->new_activate_at);
      resp->set_old_kid(rotated->old_kid);
      resp->set_old_retire_at_unix(rotated->old_retire_at);
      spdlog::info("JWT signing key rotation by {}: {} signs from {}", identity, rotated->new_kid,
                   rotated->new_activate_at);
    }
  }
  return FinishUnary(ctx, status, "RotateJwtKey");
}

grpc::ServerUnaryReactor* AdminServiceImpl::AckJwtCritical(grpc::CallbackServerContext* ctx,
                                                           const v1::AckJwtCriticalRequest* req,
                                                           v1::AckJwtCriticalResponse* resp) {
  std::string identity;
  absl::Status status = gate_.Admit(*ctx, authz::Operation::kAdminJwt, "", &identity);
  if (status.ok()) {
    status = jwt_.Ack();
    if (status.ok()) spdlog::info("JWT Critical state acknowledged by {}", identity);
  }
  if (status.ok()) resp->set_state(jwt_.Status().state_name);
  return FinishUnary(ctx, status, "AckJwtCritical");
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
  if (coordinator_.has_bus()) {
    add_backend("redis", coordinator_.bus_healthy() ? absl::OkStatus()
                                                    : absl::UnavailableError("unreachable"));
  }
  resp->set_leader(coordinator_.is_leader());
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
                                                      const v1::GetStatusRequest* req,
                                                      v1::GetStatusResponse* resp) {
  absl::Status status = gate_.Admit(*ctx, authz::Operation::kGetStatus, "");
  if (status.ok()) status = Status(resp);
  return FinishUnary(ctx, status, "GetStatus");
}

}  // namespace kms::server
