// SecretBytes: the one type that holds key bytes and plaintext inside kmsd.
//
// Its storage is wiped with OPENSSL_cleanse when freed or resized, locked in RAM
// (mlock) when the process may, and excluded from core dumps (MADV_DONTDUMP) for
// allocations of a page or more. Copying is explicit (Clone()), so a secret is never
// duplicated by accident. Reading the bytes is greppable: data() / span() only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string_view>

namespace kms {

class SecretBytes {
 public:
  SecretBytes() = default;
  // `size` zero bytes.
  explicit SecretBytes(size_t size);
  // A copy of `bytes` (the caller wipes its own copy if it must).
  static SecretBytes CopyOf(std::span<const uint8_t> bytes);
  static SecretBytes CopyOf(std::string_view bytes);

  SecretBytes(SecretBytes&& other) noexcept;
  SecretBytes& operator=(SecretBytes&& other) noexcept;
  SecretBytes(const SecretBytes&) = delete;
  SecretBytes& operator=(const SecretBytes&) = delete;
  ~SecretBytes();

  SecretBytes Clone() const;

  uint8_t* data() { return data_; }
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  std::span<const uint8_t> span() const { return {data_, size_}; }
  std::span<uint8_t> mutable_span() { return {data_, size_}; }

  // Shrinks the visible size (the dropped tail is wiped). `n` <= size().
  void Truncate(size_t n);

  // Constant-time comparison.
  bool Equals(const SecretBytes& other) const;

 private:
  void Release();
  uint8_t* data_ = nullptr;
  size_t size_ = 0;
  size_t capacity_ = 0;
};

// Process hardening: no core dumps, not ptrace-attachable by other users
// (PR_SET_DUMPABLE 0), RLIMIT_CORE 0. Returns false when a step failed (logged by caller).
bool HardenProcess();

// Whether SecretBytes allocations are mlock'ed. On by default; tests may turn it off.
void SetSecretMemoryLocking(bool enabled);

}  // namespace kms
