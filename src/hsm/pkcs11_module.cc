#include "src/hsm/pkcs11_module.h"

#include <dlfcn.h>
#include <limits.h>
#include <stdlib.h>

#include <cstdio>
#include <map>

#include "absl/base/thread_annotations.h"
#include "absl/strings/cord.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "src/common/sync.h"

namespace kms::hsm {
namespace {

struct RvName {
  CK_RV rv;
  const char* name;
};

#define KMS_CKR(x) {x, #x}
constexpr RvName kRvNames[] = {
    KMS_CKR(CKR_OK),
    KMS_CKR(CKR_CANCEL),
    KMS_CKR(CKR_HOST_MEMORY),
    KMS_CKR(CKR_SLOT_ID_INVALID),
    KMS_CKR(CKR_GENERAL_ERROR),
    KMS_CKR(CKR_FUNCTION_FAILED),
    KMS_CKR(CKR_ARGUMENTS_BAD),
    KMS_CKR(CKR_NO_EVENT),
    KMS_CKR(CKR_NEED_TO_CREATE_THREADS),
    KMS_CKR(CKR_CANT_LOCK),
    KMS_CKR(CKR_ATTRIBUTE_READ_ONLY),
    KMS_CKR(CKR_ATTRIBUTE_SENSITIVE),
    KMS_CKR(CKR_ATTRIBUTE_TYPE_INVALID),
    KMS_CKR(CKR_ATTRIBUTE_VALUE_INVALID),
    KMS_CKR(CKR_ACTION_PROHIBITED),
    KMS_CKR(CKR_DATA_INVALID),
    KMS_CKR(CKR_DATA_LEN_RANGE),
    KMS_CKR(CKR_DEVICE_ERROR),
    KMS_CKR(CKR_DEVICE_MEMORY),
    KMS_CKR(CKR_DEVICE_REMOVED),
    KMS_CKR(CKR_ENCRYPTED_DATA_INVALID),
    KMS_CKR(CKR_ENCRYPTED_DATA_LEN_RANGE),
    KMS_CKR(CKR_FUNCTION_CANCELED),
    KMS_CKR(CKR_FUNCTION_NOT_PARALLEL),
    KMS_CKR(CKR_FUNCTION_NOT_SUPPORTED),
    KMS_CKR(CKR_KEY_HANDLE_INVALID),
    KMS_CKR(CKR_KEY_SIZE_RANGE),
    KMS_CKR(CKR_KEY_TYPE_INCONSISTENT),
    KMS_CKR(CKR_KEY_NOT_NEEDED),
    KMS_CKR(CKR_KEY_CHANGED),
    KMS_CKR(CKR_KEY_NEEDED),
    KMS_CKR(CKR_KEY_INDIGESTIBLE),
    KMS_CKR(CKR_KEY_FUNCTION_NOT_PERMITTED),
    KMS_CKR(CKR_KEY_NOT_WRAPPABLE),
    KMS_CKR(CKR_KEY_UNEXTRACTABLE),
    KMS_CKR(CKR_MECHANISM_INVALID),
    KMS_CKR(CKR_MECHANISM_PARAM_INVALID),
    KMS_CKR(CKR_OBJECT_HANDLE_INVALID),
    KMS_CKR(CKR_OPERATION_ACTIVE),
    KMS_CKR(CKR_OPERATION_NOT_INITIALIZED),
    KMS_CKR(CKR_PIN_INCORRECT),
    KMS_CKR(CKR_PIN_INVALID),
    KMS_CKR(CKR_PIN_LEN_RANGE),
    KMS_CKR(CKR_PIN_EXPIRED),
    KMS_CKR(CKR_PIN_LOCKED),
    KMS_CKR(CKR_SESSION_CLOSED),
    KMS_CKR(CKR_SESSION_COUNT),
    KMS_CKR(CKR_SESSION_HANDLE_INVALID),
    KMS_CKR(CKR_SESSION_PARALLEL_NOT_SUPPORTED),
    KMS_CKR(CKR_SESSION_READ_ONLY),
    KMS_CKR(CKR_SESSION_EXISTS),
    KMS_CKR(CKR_SESSION_READ_ONLY_EXISTS),
    KMS_CKR(CKR_SESSION_READ_WRITE_SO_EXISTS),
    KMS_CKR(CKR_SIGNATURE_INVALID),
    KMS_CKR(CKR_SIGNATURE_LEN_RANGE),
    KMS_CKR(CKR_TEMPLATE_INCOMPLETE),
    KMS_CKR(CKR_TEMPLATE_INCONSISTENT),
    KMS_CKR(CKR_TOKEN_NOT_PRESENT),
    KMS_CKR(CKR_TOKEN_NOT_RECOGNIZED),
    KMS_CKR(CKR_TOKEN_WRITE_PROTECTED),
    KMS_CKR(CKR_UNWRAPPING_KEY_HANDLE_INVALID),
    KMS_CKR(CKR_UNWRAPPING_KEY_SIZE_RANGE),
    KMS_CKR(CKR_UNWRAPPING_KEY_TYPE_INCONSISTENT),
    KMS_CKR(CKR_USER_ALREADY_LOGGED_IN),
    KMS_CKR(CKR_USER_NOT_LOGGED_IN),
    KMS_CKR(CKR_USER_PIN_NOT_INITIALIZED),
    KMS_CKR(CKR_USER_TYPE_INVALID),
    KMS_CKR(CKR_USER_ANOTHER_ALREADY_LOGGED_IN),
    KMS_CKR(CKR_USER_TOO_MANY_TYPES),
    KMS_CKR(CKR_WRAPPED_KEY_INVALID),
    KMS_CKR(CKR_WRAPPED_KEY_LEN_RANGE),
    KMS_CKR(CKR_WRAPPING_KEY_HANDLE_INVALID),
    KMS_CKR(CKR_WRAPPING_KEY_SIZE_RANGE),
    KMS_CKR(CKR_WRAPPING_KEY_TYPE_INCONSISTENT),
    KMS_CKR(CKR_RANDOM_SEED_NOT_SUPPORTED),
    KMS_CKR(CKR_RANDOM_NO_RNG),
    KMS_CKR(CKR_DOMAIN_PARAMS_INVALID),
    KMS_CKR(CKR_CURVE_NOT_SUPPORTED),
    KMS_CKR(CKR_BUFFER_TOO_SMALL),
    KMS_CKR(CKR_SAVED_STATE_INVALID),
    KMS_CKR(CKR_INFORMATION_SENSITIVE),
    KMS_CKR(CKR_STATE_UNSAVEABLE),
    KMS_CKR(CKR_CRYPTOKI_NOT_INITIALIZED),
    KMS_CKR(CKR_CRYPTOKI_ALREADY_INITIALIZED),
    KMS_CKR(CKR_MUTEX_BAD),
    KMS_CKR(CKR_MUTEX_NOT_LOCKED),
    KMS_CKR(CKR_FUNCTION_REJECTED),
};
#undef KMS_CKR

// Every module this process loaded, by canonical path. Acquire/release and therefore
// C_Initialize/C_Finalize happen under one mutex.
struct LoadedModule {
  void* dl = nullptr;
  CK_FUNCTION_LIST* fn = nullptr;
  int refs = 0;
  bool finalize = false;  // we called C_Initialize successfully, so we call C_Finalize
};

struct ModuleRegistry {
  Mutex mu;
  std::map<std::string, LoadedModule> modules ABSL_GUARDED_BY(mu);
};
ModuleRegistry& Registry() {
  static auto* registry = new ModuleRegistry;
  return *registry;
}

}  // namespace

absl::Status RvToStatusText(CK_RV rv, std::string_view what);

std::string CkrName(CK_RV rv) {
  for (const RvName& n : kRvNames) {
    if (n.rv == rv) return n.name;
  }
  char buf[32];
  std::snprintf(buf, sizeof(buf), "CKR_0x%lx", static_cast<unsigned long>(rv));
  return buf;
}

std::optional<CK_RV> CkrOf(const absl::Status& status) {
  auto payload = status.GetPayload(kCkrPayloadUrl);
  if (!payload.has_value()) return std::nullopt;
  unsigned long v = 0;
  if (!absl::SimpleAtoi(std::string(*payload), &v)) return std::nullopt;
  return static_cast<CK_RV>(v);
}

absl::Status WithCkr(absl::Status status, CK_RV rv) {
  if (!status.ok()) status.SetPayload(kCkrPayloadUrl, absl::Cord(absl::StrCat(rv)));
  return status;
}

absl::Status RvToStatus(CK_RV rv, std::string_view what) {
  return WithCkr(RvToStatusText(rv, what), rv);
}

absl::Status RvToStatusText(CK_RV rv, std::string_view what) {
  if (rv == CKR_OK) return absl::OkStatus();
  std::string msg = absl::StrCat(absl::string_view(what.data(), what.size()), ": ", CkrName(rv));
  switch (rv) {
    case CKR_PIN_INCORRECT:
    case CKR_PIN_INVALID:
    case CKR_PIN_LEN_RANGE:
    case CKR_PIN_EXPIRED:
    case CKR_PIN_LOCKED:
    case CKR_USER_PIN_NOT_INITIALIZED:
    case CKR_USER_ANOTHER_ALREADY_LOGGED_IN:
      return absl::PermissionDeniedError(msg);
    case CKR_DEVICE_ERROR:
    case CKR_DEVICE_MEMORY:
    case CKR_DEVICE_REMOVED:
    case CKR_TOKEN_NOT_PRESENT:
    case CKR_TOKEN_NOT_RECOGNIZED:
    case CKR_SLOT_ID_INVALID:
    case CKR_SESSION_CLOSED:
    case CKR_SESSION_COUNT:
    case CKR_SESSION_HANDLE_INVALID:
    case CKR_USER_NOT_LOGGED_IN:
    case CKR_CRYPTOKI_NOT_INITIALIZED:
    case CKR_FUNCTION_CANCELED:
      return absl::UnavailableError(msg);
    case CKR_ENCRYPTED_DATA_INVALID:
    case CKR_ENCRYPTED_DATA_LEN_RANGE:
    case CKR_WRAPPED_KEY_INVALID:
    case CKR_WRAPPED_KEY_LEN_RANGE:
      return absl::DataLossError(msg);
    case CKR_HOST_MEMORY:
      return absl::ResourceExhaustedError(msg);
    case CKR_MECHANISM_INVALID:
    case CKR_MECHANISM_PARAM_INVALID:
    case CKR_KEY_TYPE_INCONSISTENT:
    case CKR_KEY_FUNCTION_NOT_PERMITTED:
    case CKR_KEY_UNEXTRACTABLE:
    case CKR_KEY_NOT_WRAPPABLE:
    case CKR_TOKEN_WRITE_PROTECTED:
    case CKR_WRAPPING_KEY_TYPE_INCONSISTENT:
    case CKR_UNWRAPPING_KEY_TYPE_INCONSISTENT:
      return absl::FailedPreconditionError(msg);
    default:
      return absl::InternalError(msg);
  }
}

bool IsDeadSessionRv(CK_RV rv) {
  return rv == CKR_SESSION_HANDLE_INVALID || rv == CKR_SESSION_CLOSED ||
         rv == CKR_DEVICE_REMOVED || rv == CKR_TOKEN_NOT_PRESENT;
}

absl::StatusOr<std::shared_ptr<Pkcs11Module>> Pkcs11Module::Acquire(const std::string& path) {
  if (path.empty()) return absl::InvalidArgumentError("PKCS#11 module path is empty");
  char resolved[PATH_MAX];
  if (realpath(path.c_str(), resolved) == nullptr) {
    return absl::NotFoundError(absl::StrCat("PKCS#11 module not found: ", path));
  }
  std::string canonical = resolved;

  ModuleRegistry& registry = Registry();
  MutexLock lock(&registry.mu);
  LoadedModule& m = registry.modules[canonical];
  if (m.refs == 0) {
    void* dl = dlopen(canonical.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (dl == nullptr) {
      registry.modules.erase(canonical);
      const char* err = dlerror();
      return absl::FailedPreconditionError(
          absl::StrCat("cannot load PKCS#11 module ", canonical, ": ", err ? err : "?"));
    }
    auto get_list = reinterpret_cast<CK_C_GetFunctionList>(dlsym(dl, "C_GetFunctionList"));
    CK_FUNCTION_LIST* fn = nullptr;
    if (get_list == nullptr) {
      dlclose(dl);
      registry.modules.erase(canonical);
      return absl::FailedPreconditionError(
          absl::StrCat(canonical, " is not a PKCS#11 module (no C_GetFunctionList)"));
    }
    CK_RV rv = get_list(&fn);
    if (rv != CKR_OK || fn == nullptr) {
      dlclose(dl);
      registry.modules.erase(canonical);
      return RvToStatus(rv == CKR_OK ? CKR_GENERAL_ERROR : rv, "C_GetFunctionList");
    }
    CK_C_INITIALIZE_ARGS args{};
    args.flags = CKF_OS_LOCKING_OK;
    rv = fn->C_Initialize(&args);
    if (rv != CKR_OK && rv != CKR_CRYPTOKI_ALREADY_INITIALIZED) {
      dlclose(dl);
      registry.modules.erase(canonical);
      return RvToStatus(rv, "C_Initialize");
    }
    m.dl = dl;
    m.fn = fn;
    // Someone else in the process (not through this registry) initialized it: they own
    // C_Finalize.
    m.finalize = rv == CKR_OK;
  }
  ++m.refs;
  return std::shared_ptr<Pkcs11Module>(new Pkcs11Module(canonical, m.fn));
}

Pkcs11Module::~Pkcs11Module() {
  ModuleRegistry& registry = Registry();
  MutexLock lock(&registry.mu);
  auto it = registry.modules.find(path_);
  if (it == registry.modules.end()) return;  // cannot happen
  if (--it->second.refs > 0) return;
  if (it->second.finalize) it->second.fn->C_Finalize(nullptr);
  dlclose(it->second.dl);
  registry.modules.erase(it);
}

std::string TrimPadded(const unsigned char* field, size_t size) {
  std::string s(reinterpret_cast<const char*>(field), size);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\0')) s.pop_back();
  return s;
}

absl::StatusOr<std::vector<CK_SLOT_ID>> FindSlotsByTokenLabel(CK_FUNCTION_LIST* fn,
                                                              std::string_view label) {
  std::vector<CK_SLOT_ID> slots;
  // The slot list can grow between the two calls (SoftHSM adds a slot after C_InitToken).
  for (int attempt = 0;; ++attempt) {
    CK_ULONG n = 0;
    CK_RV rv = fn->C_GetSlotList(CK_TRUE, nullptr, &n);
    if (rv != CKR_OK) return RvToStatus(rv, "C_GetSlotList");
    slots.resize(n);
    rv = fn->C_GetSlotList(CK_TRUE, slots.data(), &n);
    if (rv == CKR_BUFFER_TOO_SMALL && attempt < 3) continue;
    if (rv != CKR_OK) return RvToStatus(rv, "C_GetSlotList");
    slots.resize(n);
    break;
  }
  std::vector<CK_SLOT_ID> found;
  for (CK_SLOT_ID slot : slots) {
    CK_TOKEN_INFO info{};
    CK_RV rv = fn->C_GetTokenInfo(slot, &info);
    if (rv == CKR_TOKEN_NOT_PRESENT || rv == CKR_TOKEN_NOT_RECOGNIZED) continue;
    if (rv != CKR_OK) return RvToStatus(rv, "C_GetTokenInfo");
    if ((info.flags & CKF_TOKEN_INITIALIZED) == 0) continue;
    if (TrimPadded(info.label, sizeof(info.label)) == label) found.push_back(slot);
  }
  return found;
}

}  // namespace kms::hsm
