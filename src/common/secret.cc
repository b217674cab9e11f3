#include "kms/common/secret.h"

#include <openssl/crypto.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <unordered_map>
#include <unordered_set>

#include "absl/base/thread_annotations.h"
#include "src/common/sync.h"

namespace kms {
namespace {

std::atomic<bool> g_lock_memory{true};

size_t PageSize() {
  static const size_t page = [] {
    long p = sysconf(_SC_PAGESIZE);
    return p > 0 ? static_cast<size_t>(p) : size_t{4096};
  }();
  return page;
}

// mlock works on whole pages and does not nest: unlocking one small secret would also
// unlock every other secret sharing its page. So locked pages are reference-counted,
// and a page is locked on its first secret and unlocked after its last one. The table
// also records which allocations were locked, because locking can be switched off
// between an allocation and its release.
class PageLocker {
 public:
  static PageLocker& Instance() {
    static PageLocker* locker = new PageLocker();  // Never destroyed: used from destructors.
    return *locker;
  }

  void Lock(const void* p, size_t n) {
    const size_t page = PageSize();
    const uintptr_t first = reinterpret_cast<uintptr_t>(p) & ~(page - 1);
    const uintptr_t last = (reinterpret_cast<uintptr_t>(p) + n - 1) & ~(page - 1);
    MutexLock lock(&mu_);
    for (uintptr_t pg = first; pg <= last; pg += page) {
      auto [it, inserted] = pages_.try_emplace(pg, 0);
      if (inserted && mlock(reinterpret_cast<void*>(pg), page) != 0) {
        // Best effort (RLIMIT_MEMLOCK, no CAP_IPC_LOCK): the secret is still wiped on
        // free and excluded from core dumps; it may merely be swapped out. All or
        // nothing per allocation, so Unlock never drops a count it did not take.
        pages_.erase(it);
        for (uintptr_t done = first; done < pg; done += page) Unref(done, page);
        return;
      }
      ++it->second;
    }
    allocations_.insert(p);
  }

  void Unlock(const void* p, size_t n) {
    const size_t page = PageSize();
    const uintptr_t first = reinterpret_cast<uintptr_t>(p) & ~(page - 1);
    const uintptr_t last = (reinterpret_cast<uintptr_t>(p) + n - 1) & ~(page - 1);
    MutexLock lock(&mu_);
    if (allocations_.erase(p) == 0) return;
    for (uintptr_t pg = first; pg <= last; pg += page) Unref(pg, page);
  }

 private:
  void Unref(uintptr_t pg, size_t page) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    auto it = pages_.find(pg);
    if (it != pages_.end() && --it->second == 0) {
      munlock(reinterpret_cast<void*>(pg), page);
      pages_.erase(it);
    }
  }

  Mutex mu_;
  std::unordered_map<uintptr_t, int> pages_ ABSL_GUARDED_BY(mu_);     // Page -> secrets on it.
  std::unordered_set<const void*> allocations_ ABSL_GUARDED_BY(mu_);  // Locked ones.
};

// Allocations of a page or more get pages of their own, so MADV_DONTDUMP (which works
// on whole pages) covers exactly the secret and nothing else of the heap.
bool IsPageBacked(size_t capacity) { return capacity >= PageSize(); }

uint8_t* Allocate(size_t size, size_t* capacity) {
  void* p = nullptr;
  if (size >= PageSize()) {
    const size_t page = PageSize();
    *capacity = (size + page - 1) & ~(page - 1);
    if (posix_memalign(&p, page, *capacity) != 0) p = nullptr;
    if (p != nullptr) madvise(p, *capacity, MADV_DONTDUMP);
  } else {
    *capacity = size;
    p = std::malloc(size);
  }
  if (p == nullptr) {
    // Out of memory is not a handled condition anywhere in kmsd (handle-or-crash policy).
    std::fputs("kmsd: out of memory allocating secret storage\n", stderr);
    std::abort();
  }
  if (g_lock_memory.load(std::memory_order_relaxed)) PageLocker::Instance().Lock(p, *capacity);
  return static_cast<uint8_t*>(p);
}

}  // namespace

SecretBytes::SecretBytes(size_t size) {
  if (size == 0) return;
  data_ = Allocate(size, &capacity_);
  std::memset(data_, 0, capacity_);
  size_ = size;
}

SecretBytes SecretBytes::CopyOf(std::span<const uint8_t> bytes) {
  SecretBytes s(bytes.size());
  if (!bytes.empty()) std::memcpy(s.data_, bytes.data(), bytes.size());
  return s;
}

SecretBytes SecretBytes::CopyOf(std::string_view bytes) {
  return CopyOf(
      std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()));
}

SecretBytes::SecretBytes(SecretBytes&& other) noexcept
    : data_(other.data_), size_(other.size_), capacity_(other.capacity_) {
  // Ownership moves with the pointer: the bytes are never copied, so the moved-from
  // object has nothing left to wipe.
  other.data_ = nullptr;
  other.size_ = 0;
  other.capacity_ = 0;
}

SecretBytes& SecretBytes::operator=(SecretBytes&& other) noexcept {
  if (this != &other) {
    Release();
    data_ = other.data_;
    size_ = other.size_;
    capacity_ = other.capacity_;
    other.data_ = nullptr;
    other.size_ = 0;
    other.capacity_ = 0;
  }
  return *this;
}

SecretBytes::~SecretBytes() { Release(); }

SecretBytes SecretBytes::Clone() const { return CopyOf(span()); }

void SecretBytes::Truncate(size_t n) {
  if (n >= size_) return;
  OPENSSL_cleanse(data_ + n, size_ - n);
  size_ = n;
}

bool SecretBytes::Equals(const SecretBytes& other) const {
  // Lengths are not secret (they follow from the key type); the contents are.
  if (size_ != other.size_) return false;
  if (size_ == 0) return true;
  return CRYPTO_memcmp(data_, other.data_, size_) == 0;
}

void SecretBytes::Release() {
  if (data_ == nullptr) return;
  OPENSSL_cleanse(data_, capacity_);
  PageLocker::Instance().Unlock(data_, capacity_);
  // The heap may hand these pages to ordinary data next; let that show in core dumps.
  if (IsPageBacked(capacity_)) madvise(data_, capacity_, MADV_DODUMP);
  std::free(data_);
  data_ = nullptr;
  size_ = 0;
  capacity_ = 0;
}

bool HardenProcess() {
  bool ok = true;
  if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) ok = false;
  const struct rlimit no_core = {0, 0};
  if (setrlimit(RLIMIT_CORE, &no_core) != 0) ok = false;
  return ok;
}

void SetSecretMemoryLocking(bool enabled) {
  g_lock_memory.store(enabled, std::memory_order_relaxed);
}

}  // namespace kms
