#include "src/server/grpc/admin_service.h"

#include <algorithm>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
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
  // A named key's row id is "key:NAME": callers see the name (key_ref.h).
  absl::StatusOr<keys::KeyRef> ref = keys::KeyRef::FromStorageId(info.tenant.id);
  if (ref.ok() && ref->is_named_key()) {
    out->set_key_name(ref->name());
  } else {
    out->set_tenant_id(info.tenant.id);
  }
  out->set_state(std::string(store::TenantStateName(info.tenant.state)));
  out->set_primary_dek_version(info.tenant.primary_dek_version);
  out->set_min_decrypt_version(info.tenant.min_decrypt_version);
  out->set_created_at_unix(info.tenant.created_at);
  out->set_dek_created_at_unix(info.primary_dek_created_at);
}

void FillRotationJob(const store::RotationJobRecord& j, v1::RotationJob* out) {
  out->set_job_id(absl::StrCat(j.id));
  out->set_kind(std::string(store::RotationJobKindName(j.kind)));
  out->set_state(std::string(store::RotationJobStateName(j.state)));
  out->set_from_kek_version(j.from_kek_version);
  out->set_to_kek_version(j.to_kek_version);
  out->set_total(j.progress.total);
  out->set_done(j.progress.done);
  out->set_skipped(j.progress.skipped);
  out->set_started_at_unix(j.created_at);
  out->set_updated_at_unix(j.updated_at);
  out->set_finished_at_unix(j.finished_at);
  // The job's average: checkpoints carry counts and times, not a recent window.
  const int64_t end = j.finished_at != 0 ? j.finished_at : j.updated_at;
  const int64_t seconds = std::max<int64_t>(1, end - j.created_at);
  out->set_rate_per_second(static_cast<double>(j.progress.done + j.progress.skipped) /
                           static_cast<double>(seconds));
  out->set_last_error(j.error);
}

absl::Status NoRotation() { return absl::UnavailableError("the rotation service is not running"); }

// The log field naming a key set: "tenant" or "key".
std::pair<std::string_view, std::string> KeyField(const keys::KeyRef& ref) {
  return {ref.is_named_key() ? "key" : "tenant", ref.name()};
}

// The policy resource of "every named key" (the grant "key:*" or "*").
constexpr std::string_view kEveryNamedKey = "key:*";

// KeyManager says "tenant not found" for any unknown row; for a named key say so.
template <typename T>
absl::StatusOr<T> NamedKeyStatus(const keys::KeyRef& ref, absl::StatusOr<T> result) {
  if (ref.is_named_key() && absl::IsNotFound(result.status())) {
    return absl::NotFoundError("named key not found");
  }
  return result;
}

}  // namespace

absl::StatusOr<keys::TenantId> AdminServiceImpl::Admit(const std::string& identity,
                                                       authz::Operation op,
                                                       const std::string& tenant) const {
  KMS_ASSIGN_OR_RETURN(keys::TenantId id, keys::TenantId::Parse(tenant));
  KMS_RETURN_IF_ERROR(gate_.Admit(identity, op, id.str()));
  return id;
}

absl::StatusOr<keys::KeyRef> AdminServiceImpl::AdmitKey(const std::string& identity,
                                                        authz::Operation op,
                                                        const std::string& tenant_id,
                                                        const std::string& key_name) const {
  KMS_ASSIGN_OR_RETURN(keys::KeyRef ref, keys::KeyRef::FromRequest(tenant_id, key_name));
  KMS_RETURN_IF_ERROR(gate_.Admit(identity, op, ref.storage_id().str()));
  return ref;
}

grpc::ServerUnaryReactor* AdminServiceImpl::CreateTenant(grpc::CallbackServerContext* ctx,
                                                         const grpc::ByteBuffer* in,
                                                         grpc::ByteBuffer* out) {
  return ServeUnary<v1::CreateTenantRequest, v1::CreateTenantResponse>(
      ctx, in, out, kMaxAdminRequestBytes, "CreateTenant",
      [&](const std::string& identity, const v1::CreateTenantRequest& req,
          v1::CreateTenantResponse* resp) -> absl::Status {
        KMS_ASSIGN_OR_RETURN(keys::KeyRef ref, AdmitKey(identity, authz::Operation::kCreateTenant,
                                                        req.tenant_id(), req.key_name()));
        absl::StatusOr<keys::TenantInfo> info = keys_.CreateTenant(ref.storage_id());
        if (absl::IsAlreadyExists(info.status()) && ref.is_named_key()) {
          return absl::AlreadyExistsError("named key already exists");
        }
        if (!info.ok()) return info.status();
        FillTenant(*info, resp->mutable_tenant());
        LogEvent(spdlog::level::info, ref.is_named_key() ? "named_key_created" : "tenant_created",
                 {KeyField(ref), {"by", identity}});
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* AdminServiceImpl::CreateTenants(grpc::CallbackServerContext* ctx,
                                                          const grpc::ByteBuffer* in,
                                                          grpc::ByteBuffer* out) {
  // A full batch of the longest ids (1 byte of tag and 1 of length each), with room.
  constexpr size_t kMaxRequestBytes = store::kMaxCreateTenantsBatch * (keys::kMaxTenantIdLength + 8);
  return ServeUnary<v1::CreateTenantsRequest, v1::CreateTenantsResponse>(
      ctx, in, out, kMaxRequestBytes, "CreateTenants",
      [&](const std::string& identity, const v1::CreateTenantsRequest& req,
          v1::CreateTenantsResponse* resp) -> absl::Status {
        // Creating many tenants at once acts on no one tenant: the grant of every tenant.
        KMS_RETURN_IF_ERROR(
            gate_.Admit(identity, authz::Operation::kCreateTenant, CallGate::kEveryTenant));
        if (req.tenant_ids_size() == 0 ||
            static_cast<size_t>(req.tenant_ids_size()) > store::kMaxCreateTenantsBatch) {
          return absl::InvalidArgumentError(absl::StrCat(
              "tenant_ids must hold 1 to ", store::kMaxCreateTenantsBatch, " ids"));
        }
        std::vector<keys::TenantId> ids;
        ids.reserve(static_cast<size_t>(req.tenant_ids_size()));
        for (const std::string& id : req.tenant_ids()) {
          absl::StatusOr<keys::TenantId> parsed = keys::TenantId::Parse(id);
          if (!parsed.ok()) {
            return absl::InvalidArgumentError(
                absl::StrCat("tenant_ids[", ids.size(), "]: ", parsed.status().message()));
          }
          ids.push_back(*std::move(parsed));
        }
        KMS_ASSIGN_OR_RETURN(std::vector<store::CreateTenantResult> results,
                             keys_.CreateTenants(ids));
        uint32_t created = 0;
        for (store::CreateTenantResult r : results) {
          const bool made = r == store::CreateTenantResult::kCreated;
          resp->add_created(made);
          created += made ? 1 : 0;
        }
        resp->set_created_count(created);
        // The ids themselves are in the request (one audit record names the call, tenant
        // "*"): the log names the batch's first and last, as CreateTenant's names its one.
        LogEvent(spdlog::level::info, "tenants_created",
                 {{"count", absl::StrCat(created)},
                  {"existing", absl::StrCat(results.size() - created)},
                  {"first", ids.front().str()},
                  {"last", ids.back().str()},
                  {"by", identity}});
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
        KMS_ASSIGN_OR_RETURN(keys::KeyRef ref, AdmitKey(identity, authz::Operation::kGetTenant,
                                                        req.tenant_id(), req.key_name()));
        absl::StatusOr<keys::TenantInfo> info = keys_.GetTenant(ref.storage_id());
        if (absl::IsNotFound(info.status()) && ref.is_named_key()) {
          return absl::NotFoundError("named key not found");
        }
        if (!info.ok()) return info.status();
        FillTenant(*info, resp->mutable_tenant());
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
        // Named keys: the grant of every named key ("key:*", or "*").
        KMS_RETURN_IF_ERROR(gate_.Admit(identity, authz::Operation::kListTenants,
                                        req.named_keys() ? kEveryNamedKey : CallGate::kEveryTenant));
        const int page_size = req.page_size() == 0 ? kDefaultPageSize : req.page_size();
        if (page_size < 0 || page_size > kMaxPageSize) {
          return absl::InvalidArgumentError("page_size must be between 0 and 1000");
        }
        if (req.named_keys()) return ListNamedKeys(req, page_size, resp);
        // The page token is the last row id of the previous page (a tenant's, or a
        // reserved one's: rows of named and blind-index keys are left out of the page).
        if (!req.page_token().empty()) {
          KMS_RETURN_IF_ERROR(keys::TenantId::ParseStored(req.page_token()).status());
        }
        KMS_ASSIGN_OR_RETURN(store::TenantPage page, keys_.ListTenants(req.page_token(), page_size));
        for (store::TenantRecord& t : page.tenants) {
          if (keys::IsReservedStorageId(t.id)) continue;
          FillTenant(keys::TenantInfo{.tenant = std::move(t)}, resp->add_tenants());
        }
        resp->set_next_page_token(page.next_after);
        return absl::OkStatus();
      });
}

absl::Status AdminServiceImpl::ListNamedKeys(const v1::ListTenantsRequest& req, int page_size,
                                             v1::ListTenantsResponse* resp) {
  // Named keys are the rows "key:NAME", contiguous in the store's id order; the page
  // token is the last name of the previous page.
  std::string after(keys::kNamedKeyPrefix);
  if (!req.page_token().empty()) {
    KMS_ASSIGN_OR_RETURN(keys::KeyRef last, keys::KeyRef::ForNamedKey(req.page_token()));
    after = last.storage_id().str();
  }
  KMS_ASSIGN_OR_RETURN(store::TenantPage page, keys_.ListTenants(after, page_size));
  for (store::TenantRecord& t : page.tenants) {
    if (!t.id.starts_with(keys::kNamedKeyPrefix)) {  // past the last named key
      resp->clear_next_page_token();
      return absl::OkStatus();
    }
    std::string name = t.id.substr(keys::kNamedKeyPrefix.size());
    FillTenant(keys::TenantInfo{.tenant = std::move(t)}, resp->add_tenants());
    if (!page.next_after.empty()) resp->set_next_page_token(name);
  }
  return absl::OkStatus();
}

grpc::ServerUnaryReactor* AdminServiceImpl::RotateTenantKey(grpc::CallbackServerContext* ctx,
                                                            const grpc::ByteBuffer* in,
                                                            grpc::ByteBuffer* out) {
  return ServeUnary<v1::RotateTenantKeyRequest, v1::RotateTenantKeyResponse>(
      ctx, in, out, kMaxAdminRequestBytes, "RotateTenantKey",
      [&](const std::string& identity, const v1::RotateTenantKeyRequest& req,
          v1::RotateTenantKeyResponse* resp) -> absl::Status {
        KMS_ASSIGN_OR_RETURN(keys::KeyRef ref, AdmitKey(identity, authz::Operation::kRotate,
                                                        req.tenant_id(), req.key_name()));
        KMS_ASSIGN_OR_RETURN(keys::TenantInfo info,
                             NamedKeyStatus(ref, keys_.RotateTenantDek(ref.storage_id())));
        FillTenant(info, resp->mutable_tenant());
        LogEvent(spdlog::level::info,
                 ref.is_named_key() ? "named_key_dek_rotated" : "tenant_dek_rotated",
                 {KeyField(ref),
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
          v1::ShredTenantResponse* resp) -> absl::Status {
        KMS_ASSIGN_OR_RETURN(keys::KeyRef ref, AdmitKey(identity, authz::Operation::kShred,
                                                        req.tenant_id(), req.key_name()));
        if (req.confirm_tenant_id() != req.tenant_id()) {
          return absl::InvalidArgumentError("confirm_tenant_id must repeat tenant_id");
        }
        if (req.confirm_key_name() != req.key_name()) {
          return absl::InvalidArgumentError("confirm_key_name must repeat key_name");
        }
        const keys::TenantId& tenant = ref.storage_id();
        KMS_ASSIGN_OR_RETURN(keys::ShredResult shred,
                             NamedKeyStatus(ref, keys_.ShredTenant(tenant)));
        if (!shred.already_shredded) spdlog::warn("{} shredded by {}", ref.Describe(), identity);
        // Signed after the shred: when signing fails (JWT keys not loaded), the shred
        // stands and a repeated ShredTenant returns the receipt.
        KMS_ASSIGN_OR_RETURN(
            jwt::SignedReceipt receipt,
            jwt_.SignShredReceipt(jwt::ShredReceiptClaims{
                .tenant = tenant.str(),
                .destroyed_dek_versions = shred.destroyed_dek_versions,
                .shredded_at = shred.shredded_at,
                .node = node_.node_id,
                .already_shredded = shred.already_shredded}));
        resp->set_receipt_jws(std::move(receipt.jws));
        for (uint32_t v : shred.destroyed_dek_versions) resp->add_destroyed_dek_versions(v);
        resp->set_shredded_at_unix(shred.shredded_at);
        resp->set_node_id(node_.node_id);
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
        if (rotation_ == nullptr) return NoRotation();
        KMS_ASSIGN_OR_RETURN(store::RotationJobRecord job, rotation_->StartKekRotation());
        resp->set_primary_kek_version(job.to_kek_version);
        resp->set_job_id(absl::StrCat(job.id));
        spdlog::info("KEK rotated to version {} by {}; re-wrap job {}", job.to_kek_version,
                     identity, job.id);
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* AdminServiceImpl::GetRotationJob(grpc::CallbackServerContext* ctx,
                                                           const grpc::ByteBuffer* in,
                                                           grpc::ByteBuffer* out) {
  return ServeUnary<v1::GetRotationJobRequest, v1::GetRotationJobResponse>(
      ctx, in, out, kMaxAdminRequestBytes, "GetRotationJob",
      [&](const std::string& identity, const v1::GetRotationJobRequest& req,
          v1::GetRotationJobResponse* resp) -> absl::Status {
        KMS_RETURN_IF_ERROR(gate_.Admit(identity, authz::Operation::kGetStatus, ""));
        if (rotation_ == nullptr) return NoRotation();
        int64_t id = 0;
        if (!req.job_id().empty() &&
            (req.job_id().size() > 18 || !absl::SimpleAtoi(req.job_id(), &id) || id <= 0)) {
          return absl::InvalidArgumentError("job_id must be a positive number (or empty: newest)");
        }
        KMS_ASSIGN_OR_RETURN(store::RotationJobRecord job, rotation_->GetJob(id));
        FillRotationJob(job, resp->mutable_job());
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

grpc::ServerUnaryReactor* AdminServiceImpl::SetMinDecryptVersion(grpc::CallbackServerContext* ctx,
                                                                 const grpc::ByteBuffer* in,
                                                                 grpc::ByteBuffer* out) {
  return ServeUnary<v1::SetMinDecryptVersionRequest, v1::SetMinDecryptVersionResponse>(
      ctx, in, out, kMaxAdminRequestBytes, "SetMinDecryptVersion",
      [&](const std::string& identity, const v1::SetMinDecryptVersionRequest& req,
          v1::SetMinDecryptVersionResponse* resp) -> absl::Status {
        // Retiring DEK versions is key lifecycle management, like a rotation.
        KMS_ASSIGN_OR_RETURN(keys::KeyRef ref, AdmitKey(identity, authz::Operation::kRotate,
                                                        req.tenant_id(), req.key_name()));
        KMS_ASSIGN_OR_RETURN(
            keys::TenantInfo info,
            NamedKeyStatus(ref, keys_.SetMinDecryptVersion(ref.storage_id(),
                                                           req.min_decrypt_version())));
        FillTenant(info, resp->mutable_tenant());
        spdlog::warn("{}: DEK versions below {} retired by {}", ref.Describe(),
                     info.tenant.min_decrypt_version, identity);
        return absl::OkStatus();
      });
}

absl::Status AdminServiceImpl::Keys(const v1::ListKeysRequest& req, v1::ListKeysResponse* resp) {
  const int64_t now = clock_.UnixSeconds();
  KMS_ASSIGN_OR_RETURN(std::vector<keys::KekInfo> keks, kek_ring_.List());
  KMS_ASSIGN_OR_RETURN(std::vector<store::KekUsage> usage, store_.ListKekUsage());
  const uint32_t primary_kek = keys_.primary_kek_version();
  for (const keys::KekInfo& k : keks) {
    v1::KekKeyInfo* info = resp->add_keks();
    info->set_version(k.version);
    info->set_state(std::string(store::KekStateName(k.state)));
    info->set_created_at_unix(k.created_at);
    info->set_age_seconds(now - k.created_at);
    info->set_wrap_mechanism(k.mechanism);
    info->set_primary(k.version == primary_kek);
    for (const store::KekUsage& u : usage) {
      if (u.kek_version != k.version) continue;
      info->set_deks_wrapped(u.deks);
      info->set_jwt_keys_wrapped(u.jwt_keys);
    }
  }
  // The primary KEK's age against the rotation period (rotation.kek_period_seconds).
  if (rotation_ != nullptr) {
    for (const keys::KekInfo& k : keks) {
      if (k.version != primary_kek) continue;
      resp->set_kek_rotation_due_in_seconds(k.created_at +
                                            rotation_->options().kek_period_seconds - now);
    }
  }

  auto add_tenant = [&](const keys::TenantId& id, uint32_t primary) -> absl::Status {
    KMS_ASSIGN_OR_RETURN(std::vector<store::DekRecord> deks, keys_.ListDekVersions(id));
    v1::TenantKeys* tk = resp->add_tenants();
    absl::StatusOr<keys::KeyRef> ref = keys::KeyRef::FromStorageId(id.str());
    if (ref.ok() && ref->is_named_key()) {
      tk->set_key_name(ref->name());
    } else {
      tk->set_tenant_id(id.str());
    }
    for (const store::DekRecord& d : deks) {
      v1::DekVersionInfo* info = tk->add_dek_versions();
      info->set_version(d.version);
      info->set_state(std::string(store::DekStateName(d.state)));
      info->set_created_at_unix(d.created_at);
      info->set_age_seconds(now - d.created_at);
      info->set_encryptions(d.encryptions);
      info->set_kek_version(d.kek_version);
      info->set_primary(d.version == primary && d.state != store::DekState::kDestroyed);
    }
    return absl::OkStatus();
  };
  if (!req.tenant_id().empty() || !req.key_name().empty()) {
    KMS_ASSIGN_OR_RETURN(keys::KeyRef ref, keys::KeyRef::FromRequest(req.tenant_id(), req.key_name()));
    KMS_ASSIGN_OR_RETURN(keys::TenantInfo info,
                         NamedKeyStatus(ref, keys_.GetTenant(ref.storage_id())));
    return add_tenant(ref.storage_id(), info.tenant.primary_dek_version);
  }
  const int page_size = req.page_size() == 0 ? kDefaultPageSize : req.page_size();
  if (page_size < 0 || page_size > kMaxPageSize) {
    return absl::InvalidArgumentError("page_size must be between 0 and 1000");
  }
  if (!req.page_token().empty()) {
    KMS_RETURN_IF_ERROR(keys::TenantId::ParseStored(req.page_token()).status());
  }
  KMS_ASSIGN_OR_RETURN(store::TenantPage page, keys_.ListTenants(req.page_token(), page_size));
  for (const store::TenantRecord& t : page.tenants) {
    // Tenants and named keys; blind-index key sets are listed with nothing (their
    // DEK-like versions are not DEKs a caller could use).
    if (keys::IsIndexKeyId(t.id)) continue;
    KMS_ASSIGN_OR_RETURN(keys::TenantId id, keys::TenantId::ParseStored(t.id));
    KMS_RETURN_IF_ERROR(add_tenant(id, t.primary_dek_version));
  }
  resp->set_next_page_token(page.next_after);
  return absl::OkStatus();
}

grpc::ServerUnaryReactor* AdminServiceImpl::ListKeys(grpc::CallbackServerContext* ctx,
                                                     const grpc::ByteBuffer* in,
                                                     grpc::ByteBuffer* out) {
  return ServeUnary<v1::ListKeysRequest, v1::ListKeysResponse>(
      ctx, in, out, kMaxAdminRequestBytes, "ListKeys",
      [&](const std::string& identity, const v1::ListKeysRequest& req,
          v1::ListKeysResponse* resp) -> absl::Status {
        // One tenant: that tenant's read grant; a page: the grant to list every tenant.
        if (req.tenant_id().empty() && req.key_name().empty()) {
          KMS_RETURN_IF_ERROR(
              gate_.Admit(identity, authz::Operation::kListTenants, CallGate::kEveryTenant));
        } else {
          KMS_RETURN_IF_ERROR(AdmitKey(identity, authz::Operation::kGetTenant, req.tenant_id(),
                                       req.key_name())
                                  .status());
        }
        return Keys(req, resp);
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

  bool store_up = true;
  if (health_ != nullptr) {
    // The same source as /readyz and grpc.health.v1: the scheduler's last probes.
    const sched::HealthSnapshot snap = health_->Snapshot();
    for (const sched::BackendHealth& h : snap.backends) {
      v1::BackendState* b = resp->add_backends();
      b->set_name(h.name);
      b->set_healthy(h.up);
      b->set_detail(h.detail);
      if (h.backend == sched::Backend::kStore) store_up = h.up;
    }
    resp->set_ready(snap.serving());
    resp->set_degraded(snap.degraded);
    resp->set_degraded_since_unix(snap.degraded_since_unix);
  } else {
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
    store_up = store_health.ok();
    resp->set_ready(true);
    resp->set_degraded(!hsm_health.ok() || !store_health.ok());
  }
  if (audit_health_) {
    const absl::Status audit = audit_health_();
    v1::BackendState* b = resp->add_backends();
    b->set_name("audit");
    b->set_healthy(audit.ok());
    b->set_detail(audit.ok() ? "ok" : std::string(audit.message()));
  }
  resp->set_leader(scheduler_.is_leader());
  resp->set_jwt_state(jwt_.Status().state_name);
  if (rotation_ != nullptr) {
    const sched::RotationStatus rs = rotation_->Status();
    for (const sched::RotationKindStatus& k : rs.kinds) {
      v1::RotationDue* due = resp->add_rotations();
      due->set_kind(k.kind);
      due->set_due_in_seconds(k.due_in_seconds);
      due->set_known(k.known);
      due->set_pending(k.pending);
      due->set_skipped_since_unix(k.skipped_since_unix);
      due->set_last_error(k.last_error);
      if (rs.running_job_id != 0) due->set_running_job_id(absl::StrCat(rs.running_job_id));
    }
  }

  if (store_up) {
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

grpc::ServerUnaryReactor* AdminServiceImpl::RotateBlindIndexKey(grpc::CallbackServerContext* ctx,
                                                                const grpc::ByteBuffer* in,
                                                                grpc::ByteBuffer* out) {
  return ServeUnary<v1::RotateBlindIndexKeyRequest, v1::RotateBlindIndexKeyResponse>(
      ctx, in, out, kMaxAdminRequestBytes, "RotateBlindIndexKey",
      [&](const std::string& identity, const v1::RotateBlindIndexKeyRequest& req,
          v1::RotateBlindIndexKeyResponse* resp) -> absl::Status {
        KMS_ASSIGN_OR_RETURN(keys::KeyRef ref, AdmitKey(identity, authz::Operation::kRotate,
                                                        req.tenant_id(), req.key_name()));
        KMS_ASSIGN_OR_RETURN(keys::BlindIndexVersions v, keys_.RotateBlindIndexKey(ref));
        resp->set_index_key_version(v.current);
        resp->set_previous_index_key_version(v.previous);
        LogEvent(spdlog::level::warn, "blind_index_key_rotated",
                 {KeyField(ref), {"index_key_version", std::to_string(v.current)},
                  {"by", identity}});
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* AdminServiceImpl::FinishBlindIndexRotation(
    grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in, grpc::ByteBuffer* out) {
  return ServeUnary<v1::FinishBlindIndexRotationRequest, v1::FinishBlindIndexRotationResponse>(
      ctx, in, out, kMaxAdminRequestBytes, "FinishBlindIndexRotation",
      [&](const std::string& identity, const v1::FinishBlindIndexRotationRequest& req,
          v1::FinishBlindIndexRotationResponse* resp) -> absl::Status {
        KMS_ASSIGN_OR_RETURN(keys::KeyRef ref, AdmitKey(identity, authz::Operation::kRotate,
                                                        req.tenant_id(), req.key_name()));
        KMS_ASSIGN_OR_RETURN(keys::BlindIndexVersions v, keys_.FinishBlindIndexRotation(ref));
        resp->set_index_key_version(v.current);
        LogEvent(spdlog::level::warn, "blind_index_reindex_finished",
                 {KeyField(ref), {"index_key_version", std::to_string(v.current)},
                  {"by", identity}});
        return absl::OkStatus();
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
