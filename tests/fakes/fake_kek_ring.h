// FakeKekRing: the KekRing seam (include/kms/keys/kek_ring.h) over a FakeHsm, for unit
// tests of the key holders (JWT keys, DEKs) without a store. The KEK table is an
// in-memory map that several rings may share, as replicas share the store: a ring loads
// a version another ring created on first use, as HsmKekRing does.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <vector>

#include "kms/keys/kek_ring.h"
#include "src/common/sync.h"
#include "tests/fakes/fake_hsm.h"

namespace kms::testing {

class FakeKekRing final : public keys::KekRing {
 public:
  // The shared "store" of KEK blobs.
  class Table {
   public:
    void Put(uint32_t version, std::vector<uint8_t> blob);
    bool Get(uint32_t version, std::vector<uint8_t>* blob) const;
    uint32_t MaxVersion() const;  // 0 when empty

   private:
    mutable Mutex mu_;
    std::map<uint32_t, std::vector<uint8_t>> blobs_ ABSL_GUARDED_BY(mu_);
  };

  // A ring of its own, or one that shares `table` with other rings (replicas).
  explicit FakeKekRing(std::shared_ptr<Table> table = std::make_shared<Table>())
      : table_(std::move(table)) {}

  // Creates KEK `version` in this ring's HSM, records it in the table, makes it primary.
  absl::Status CreateKek(uint32_t version);
  void set_primary(uint32_t version) { primary_ = version; }
  // While false, EnsureLoaded does not read the table (a replica that cannot see a
  // KEK another replica created).
  void set_loads_from_table(bool on) { loads_from_table_ = on; }

  FakeHsm& hsm() { return hsm_; }
  const std::shared_ptr<Table>& table() const { return table_; }
  uint64_t loads() const { return loads_; }      // versions EnsureLoaded read from the table
  uint64_t reseals() const { return reseals_; }  // Reseal calls

  uint32_t primary_version() const override { return primary_; }
  absl::Status EnsureLoaded(uint32_t kek_version) override;
  absl::StatusOr<std::vector<uint8_t>> Seal(uint32_t kek_version,
                                            std::span<const uint8_t> plaintext,
                                            std::span<const uint8_t> aad) override;
  absl::StatusOr<SecretBytes> Open(uint32_t kek_version, std::span<const uint8_t> sealed,
                                   std::span<const uint8_t> aad) override;
  absl::StatusOr<std::vector<uint8_t>> Reseal(uint32_t from_version,
                                              std::span<const uint8_t> sealed,
                                              std::span<const uint8_t> from_aad,
                                              uint32_t to_version,
                                              std::span<const uint8_t> to_aad) override;
  // Makes the newest version in the table primary (another replica rotated).
  absl::Status Refresh() override;
  absl::Status Ping() override { return hsm_.Ping(); }

 private:
  FakeHsm hsm_;
  const std::shared_ptr<Table> table_;
  std::atomic<uint32_t> primary_{0};
  std::atomic<bool> loads_from_table_{true};
  std::atomic<uint64_t> loads_{0};
  std::atomic<uint64_t> reseals_{0};
};

}  // namespace kms::testing
