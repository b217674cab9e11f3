// RewrapTarget: one kind of key blob kmsd stores sealed under a KEK version, as the KEK
// re-wrap job walks it (DESIGN §6). The job is generic over targets: DEK versions and JWT
// private keys now; named keys and blind-index keys of later issues join by adding a
// target. A target re-wraps through KekRing::Reseal only, so a key's plaintext exists
// only inside that call (wiped at once), and writes each re-wrapped blob with a
// compare-and-set on the KEK version it read (a concurrent rotation or shred wins).
//
// Cursor: where a target resumes. Its meaning is the target's own (the job stores it
// verbatim in its checkpoint: RotationJobProgress.cursor_key / cursor_version); the
// default value is "from the start".
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "kms/common/status.h"

namespace kms::sched {

struct RewrapCursor {
  std::string key;
  uint32_t version = 0;
};

struct RewrapBatchResult {
  uint64_t done = 0;     // re-wrapped under the target KEK version by this call
  uint64_t skipped = 0;  // changed meanwhile (rotated, shredded, re-wrapped by another replica)
  uint64_t failed = 0;   // could not be re-wrapped (a blob that does not open: logged)
  RewrapCursor next;     // resume after this
  bool finished = false; // nothing follows `next` in this pass
};

// Thread-compatible: the re-wrap job calls one target at a time.
class RewrapTarget {
 public:
  virtual ~RewrapTarget() = default;
  // Unique among the job's targets, stable across releases (it is stored in checkpoints):
  // "deks", "jwt_keys".
  virtual std::string_view name() const = 0;
  // How many of the target's keys are sealed under a KEK version below `to_kek_version`.
  virtual absl::StatusOr<uint64_t> CountBelow(uint32_t to_kek_version) = 0;
  // Re-wraps up to `limit` keys sealed under a version below `to_kek_version`, in the
  // target's order strictly after `after`. UNAVAILABLE when a backend is down (nothing of
  // the batch needs redoing beyond what the CAS skips). A key that cannot be opened is
  // counted in `failed` and logged (its id, never its bytes), not an error.
  virtual absl::StatusOr<RewrapBatchResult> RewrapBatch(uint32_t to_kek_version,
                                                        const RewrapCursor& after, int limit) = 0;
};

}  // namespace kms::sched
