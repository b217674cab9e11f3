#include "src/crypto/aes_gcm.h"

#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include <algorithm>
#include <cstring>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "src/common/ssl_ptr.h"
#include "src/common/sync.h"

namespace kms::crypto {
namespace {

using CtxPtr = SslUniquePtr<EVP_CIPHER_CTX>;

// EVP takes int lengths; longer inputs are fed in pieces of this size.
constexpr size_t kMaxChunk = size_t{1} << 30;

absl::Status InternalError() { return absl::InternalError("AES-GCM operation failed"); }

// Feeds `in` to EVP_{En,De}cryptUpdate in int-sized pieces. `out` null means AAD.
template <typename UpdateFn>
bool UpdateAll(UpdateFn update, EVP_CIPHER_CTX* ctx, const uint8_t* in, size_t len, uint8_t* out) {
  while (len > 0) {
    const size_t chunk = std::min(len, kMaxChunk);
    int written = 0;
    if (update(ctx, out, &written, in, static_cast<int>(chunk)) != 1) return false;
    // GCM is a stream mode: it never buffers, so output follows input byte for byte.
    if (out != nullptr && static_cast<size_t>(written) != chunk) return false;
    in += chunk;
    len -= chunk;
    if (out != nullptr) out += chunk;
  }
  return true;
}

}  // namespace

// Contexts that already hold the expanded key. A context is reset for a new message by
// setting only its IV, which leaves the key schedule in place, so no call expands the
// key. `prototype` is never used for a message; new contexts are copies of it
// (EVP_CIPHER_CTX_copy duplicates the schedule), so the raw key bytes need not be kept.
struct AesGcmKey::CtxPool {
  // Enough for every core to have a call in flight; more contexts than that would only
  // sit idle, so extra ones made under a burst are freed on return.
  // Computed once: hardware_concurrency() reads sysfs on every call.
  static size_t MaxIdle() {
    static const size_t max_idle = std::max(4u, 2 * std::thread::hardware_concurrency());
    return max_idle;
  }

  CtxPtr prototype;
  Mutex mu;
  std::vector<CtxPtr> idle ABSL_GUARDED_BY(mu);

  CtxPtr Borrow() {
    MutexLock lock(&mu);
    if (!idle.empty()) {
      CtxPtr ctx = std::move(idle.back());
      idle.pop_back();
      return ctx;
    }
    // Copied under the lock: the prototype is shared and EVP does not promise that
    // concurrent copies of one context are safe.
    CtxPtr ctx(EVP_CIPHER_CTX_new());
    if (ctx == nullptr || EVP_CIPHER_CTX_copy(ctx.get(), prototype.get()) != 1) return nullptr;
    return ctx;
  }

  void Return(CtxPtr ctx) {
    MutexLock lock(&mu);
    if (idle.size() < MaxIdle()) idle.push_back(std::move(ctx));
    // Otherwise it is freed (and cleansed) here.
  }

  // A borrowed context, returned to the pool on every path out of a call.
  class Lease {
   public:
    explicit Lease(CtxPool& pool) : pool_(pool), ctx_(pool.Borrow()) {}
    ~Lease() {
      if (ctx_ != nullptr) pool_.Return(std::move(ctx_));
    }
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    EVP_CIPHER_CTX* get() const { return ctx_.get(); }

   private:
    CtxPool& pool_;
    CtxPtr ctx_;
  };
};

absl::StatusOr<std::unique_ptr<AesGcmKey>> AesGcmKey::Create(const SecretBytes& key) {
  if (key.size() != kAesGcmKeySize) {
    return absl::InvalidArgumentError("AES-256-GCM key must be 32 bytes");
  }
  auto pool = std::make_unique<CtxPool>();
  pool->prototype.reset(EVP_CIPHER_CTX_new());
  if (pool->prototype == nullptr || EVP_EncryptInit_ex(pool->prototype.get(), EVP_aes_256_gcm(),
                                                       nullptr, key.data(), nullptr) != 1) {
    return InternalError();
  }
  // One ready context up front, so the first call does not pay for the copy.
  CtxPtr first = pool->Borrow();
  if (first == nullptr) return InternalError();
  pool->Return(std::move(first));
  return std::unique_ptr<AesGcmKey>(new AesGcmKey(std::move(pool)));
}

AesGcmKey::AesGcmKey(std::unique_ptr<CtxPool> pool) : pool_(std::move(pool)) {}

AesGcmKey::~AesGcmKey() = default;

absl::Status AesGcmKey::Encrypt(std::span<const uint8_t> nonce, std::span<const uint8_t> plaintext,
                                std::span<const uint8_t> aad, std::span<uint8_t> out) const {
  if (nonce.size() != kAesGcmNonceSize) {
    return absl::InvalidArgumentError("AES-GCM nonce must be 12 bytes");
  }
  if (out.size() != plaintext.size() + kAesGcmTagSize) {
    return absl::InvalidArgumentError("AES-GCM output must be plaintext size + 16 bytes");
  }
  CtxPool::Lease ctx(*pool_);
  if (ctx.get() == nullptr) return InternalError();
  const size_t n = plaintext.size();
  const bool ok =
      EVP_EncryptInit_ex(ctx.get(), nullptr, nullptr, nullptr, nonce.data()) == 1 &&
      UpdateAll(EVP_EncryptUpdate, ctx.get(), aad.data(), aad.size(), nullptr) &&
      UpdateAll(EVP_EncryptUpdate, ctx.get(), plaintext.data(), n, out.data()) &&
      [&] {
        int written = 0;
        return EVP_EncryptFinal_ex(ctx.get(), out.data() + n, &written) == 1 && written == 0;
      }() &&
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_GET_TAG, kAesGcmTagSize, out.data() + n) == 1;
  if (!ok) {
    OPENSSL_cleanse(out.data(), out.size());
    return InternalError();
  }
  return absl::OkStatus();
}

absl::Status AesGcmKey::Decrypt(std::span<const uint8_t> nonce,
                                std::span<const uint8_t> ciphertext_and_tag,
                                std::span<const uint8_t> aad, std::span<uint8_t> out) const {
  if (nonce.size() != kAesGcmNonceSize) {
    return absl::InvalidArgumentError("AES-GCM nonce must be 12 bytes");
  }
  if (ciphertext_and_tag.size() < kAesGcmTagSize ||
      out.size() != ciphertext_and_tag.size() - kAesGcmTagSize) {
    return absl::InvalidArgumentError("AES-GCM output must be input size - 16 bytes");
  }
  CtxPool::Lease ctx(*pool_);
  if (ctx.get() == nullptr) return InternalError();
  const size_t n = out.size();
  // EVP's ctrl takes a non-const pointer; the tag is copied rather than cast away.
  uint8_t tag[kAesGcmTagSize];
  std::memcpy(tag, ciphertext_and_tag.data() + n, kAesGcmTagSize);
  const bool ok =
      EVP_DecryptInit_ex(ctx.get(), nullptr, nullptr, nullptr, nonce.data()) == 1 &&
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_TAG, kAesGcmTagSize, tag) == 1 &&
      UpdateAll(EVP_DecryptUpdate, ctx.get(), aad.data(), aad.size(), nullptr) &&
      UpdateAll(EVP_DecryptUpdate, ctx.get(), ciphertext_and_tag.data(), n, out.data()) && [&] {
        int written = 0;
        return EVP_DecryptFinal_ex(ctx.get(), out.data() + n, &written) == 1;
      }();
  if (!ok) {
    // Unauthenticated plaintext must never reach the caller.
    OPENSSL_cleanse(out.data(), out.size());
    return absl::DataLossError("decryption failed");
  }
  return absl::OkStatus();
}

absl::Status RandomBytes(std::span<uint8_t> out) {
  uint8_t* p = out.data();
  size_t left = out.size();
  while (left > 0) {
    const size_t chunk = std::min(left, kMaxChunk);
    if (RAND_bytes(p, static_cast<int>(chunk)) != 1) {
      return absl::InternalError("random number generator failed");
    }
    p += chunk;
    left -= chunk;
  }
  return absl::OkStatus();
}

absl::Status NonceBytes(std::span<uint8_t, kAesGcmNonceSize> out) {
  constexpr size_t kBufferSize = 4092;  // a multiple of the nonce size
  struct Buffer {
    uint8_t bytes[kBufferSize];
    size_t used = kBufferSize;
    pid_t pid = 0;
    ~Buffer() { OPENSSL_cleanse(bytes, sizeof(bytes)); }
  };
  thread_local Buffer buffer;
  const pid_t pid = getpid();
  if (buffer.used == kBufferSize || buffer.pid != pid) {
    KMS_RETURN_IF_ERROR(RandomBytes(buffer.bytes));
    buffer.used = 0;
    buffer.pid = pid;
  }
  std::memcpy(out.data(), buffer.bytes + buffer.used, kAesGcmNonceSize);
  // Wipe what was handed out: no byte of the buffer is ever handed out twice.
  OPENSSL_cleanse(buffer.bytes + buffer.used, kAesGcmNonceSize);
  buffer.used += kAesGcmNonceSize;
  return absl::OkStatus();
}

absl::StatusOr<SecretBytes> RandomSecret(size_t size) {
  SecretBytes secret(size);
  KMS_RETURN_IF_ERROR(RandomBytes(secret.mutable_span()));
  return secret;
}

}  // namespace kms::crypto
