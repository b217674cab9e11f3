// Loading a PKCS#11 module and turning its return values into absl::Status.
// Private to src/hsm (it exposes the PKCS#11 types).
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "kms/common/status.h"
#include "src/hsm/pkcs11_include.h"

namespace kms::hsm {

// "CKR_PIN_INCORRECT", or "CKR_0x..." for a code without a name here.
std::string CkrName(CK_RV rv);

// The one mapping of CK_RV to absl::Status. The message is "<what>: CKR_NAME".
//   PIN / login errors                    -> PERMISSION_DENIED
//   device, token, session, not logged in -> UNAVAILABLE
//   ciphertext / wrapped key invalid      -> DATA_LOSS
//   host memory                           -> RESOURCE_EXHAUSTED
//   mechanism or key not usable           -> FAILED_PRECONDITION
//   anything else                         -> INTERNAL
absl::Status RvToStatus(CK_RV rv, std::string_view what);

// The CK_RV a status of RvToStatus came from (kept as the status payload kCkrPayloadUrl),
// so the caller can sort failures without parsing text; nullopt for any other status.
inline constexpr absl::string_view kCkrPayloadUrl = "type.kmsd/pkcs11.ckr";
std::optional<CK_RV> CkrOf(const absl::Status& status);
// `status` with `rv` attached as CkrOf reads it (for statuses made without RvToStatus).
absl::Status WithCkr(absl::Status status, CK_RV rv);

// Whether a session that returned `rv` is dead and must be dropped, not reused.
bool IsDeadSessionRv(CK_RV rv);

// A reference to a loaded, C_Initialize'd module. All references in the process to the
// same (canonical) path share one dlopen handle and one C_Initialize; the last one to go
// calls C_Finalize (unless someone outside this registry had initialized the module) and
// dlclose. Acquire and release are serialized, so a module is never initialized while it
// is being finalized. Thread-safe.
class Pkcs11Module {
 public:
  static absl::StatusOr<std::shared_ptr<Pkcs11Module>> Acquire(const std::string& path);

  ~Pkcs11Module();
  Pkcs11Module(const Pkcs11Module&) = delete;
  Pkcs11Module& operator=(const Pkcs11Module&) = delete;

  CK_FUNCTION_LIST* fn() const { return fn_; }
  const std::string& path() const { return path_; }

 private:
  Pkcs11Module(std::string path, CK_FUNCTION_LIST* fn) : path_(std::move(path)), fn_(fn) {}

  std::string path_;  // canonical; the registry key
  CK_FUNCTION_LIST* fn_;
};

// Blank-padded fixed-width PKCS#11 text fields (labels are 32 bytes).
std::string TrimPadded(const unsigned char* field, size_t size);

// Slot ids whose present token carries `label`. Errors only for module failures.
absl::StatusOr<std::vector<CK_SLOT_ID>> FindSlotsByTokenLabel(CK_FUNCTION_LIST* fn,
                                                              std::string_view label);

}  // namespace kms::hsm
