#include "src/crypto/aes_gcm.h"

#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <thread>
#include <vector>

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

namespace {

// One thread's EVP contexts, each tagged with the id of the key whose schedule it holds
// (0: none). `mu` is taken by the owning thread around each call and by a key's
// destructor to wipe the contexts holding that key.
struct ThreadContexts {
  Mutex mu;
  CtxPtr encrypt ABSL_GUARDED_BY(mu);
  CtxPtr decrypt ABSL_GUARDED_BY(mu);
  uint64_t encrypt_key ABSL_GUARDED_BY(mu) = 0;
  uint64_t decrypt_key ABSL_GUARDED_BY(mu) = 0;
};

// Every live thread's contexts, for the destructors. Never destroyed (used from
// destructors at exit).
struct Registry {
  Mutex mu;
  std::vector<std::shared_ptr<ThreadContexts>> threads ABSL_GUARDED_BY(mu);
};
Registry& TheRegistry() {
  static Registry* registry = new Registry();
  return *registry;
}

std::atomic<uint64_t> g_next_key_id{1};

// This thread's contexts, registered on first use and unregistered at thread exit.
ThreadContexts* ThisThread() {
  struct Holder {
    std::shared_ptr<ThreadContexts> ctx = std::make_shared<ThreadContexts>();
    Holder() {
      Registry& r = TheRegistry();
      MutexLock lock(&r.mu);
      r.threads.push_back(ctx);
    }
    ~Holder() {
      Registry& r = TheRegistry();
      MutexLock lock(&r.mu);
      std::erase(r.threads, ctx);
      // The contexts are freed (and cleansed) with the last reference.
    }
  };
  thread_local Holder holder;
  return holder.ctx.get();
}

// Makes `ctx` (created on first use) hold `key` (tagged `id`) for encryption or
// decryption, and sets the nonce. One EVP call when the key is already there.
bool Prepare(CtxPtr& ctx, uint64_t& held, uint64_t id, const SecretBytes& key,
             const uint8_t* nonce, bool encrypt) {
  auto init = encrypt ? EVP_EncryptInit_ex : EVP_DecryptInit_ex;
  if (ctx == nullptr) {
    ctx.reset(EVP_CIPHER_CTX_new());
    if (ctx == nullptr || init(ctx.get(), EVP_aes_256_gcm(), nullptr, nullptr, nullptr) != 1) {
      ctx.reset();
      return false;
    }
    held = 0;
  }
  if (held == id) return init(ctx.get(), nullptr, nullptr, nullptr, nonce) == 1;
  held = 0;
  if (init(ctx.get(), nullptr, nullptr, key.data(), nonce) != 1) return false;
  held = id;
  return true;
}

}  // namespace

absl::StatusOr<std::unique_ptr<AesGcmKey>> AesGcmKey::Create(const SecretBytes& key) {
  if (key.size() != kAesGcmKeySize) {
    return absl::InvalidArgumentError("AES-256-GCM key must be 32 bytes");
  }
  return std::unique_ptr<AesGcmKey>(
      new AesGcmKey(key.Clone(), g_next_key_id.fetch_add(1, std::memory_order_relaxed)));
}

AesGcmKey::~AesGcmKey() {
  // Wipe the schedules other threads still hold for this key. EVP_CIPHER_CTX_reset
  // cleanses the context; the next call on that thread initialises it afresh.
  Registry& r = TheRegistry();
  MutexLock lock(&r.mu);
  for (const auto& t : r.threads) {
    MutexLock tl(&t->mu);
    if (t->encrypt_key == id_) {
      t->encrypt.reset();
      t->encrypt_key = 0;
    }
    if (t->decrypt_key == id_) {
      t->decrypt.reset();
      t->decrypt_key = 0;
    }
  }
}

absl::Status AesGcmKey::Encrypt(std::span<const uint8_t> nonce, std::span<const uint8_t> plaintext,
                                std::span<const uint8_t> aad, std::span<uint8_t> out) const {
  if (nonce.size() != kAesGcmNonceSize) {
    return absl::InvalidArgumentError("AES-GCM nonce must be 12 bytes");
  }
  if (out.size() != plaintext.size() + kAesGcmTagSize) {
    return absl::InvalidArgumentError("AES-GCM output must be plaintext size + 16 bytes");
  }
  ThreadContexts* t = ThisThread();
  MutexLock lock(&t->mu);
  const size_t n = plaintext.size();
  int written = 0;
  const bool ok =
      Prepare(t->encrypt, t->encrypt_key, id_, key_, nonce.data(), /*encrypt=*/true) &&
      UpdateAll(EVP_EncryptUpdate, t->encrypt.get(), aad.data(), aad.size(), nullptr) &&
      UpdateAll(EVP_EncryptUpdate, t->encrypt.get(), plaintext.data(), n, out.data()) &&
      EVP_EncryptFinal_ex(t->encrypt.get(), out.data() + n, &written) == 1 && written == 0 &&
      EVP_CIPHER_CTX_ctrl(t->encrypt.get(), EVP_CTRL_GCM_GET_TAG, kAesGcmTagSize,
                          out.data() + n) == 1;
  if (!ok) {
    OPENSSL_cleanse(out.data(), out.size());
    t->encrypt.reset();  // a context in an unknown state is not reused
    t->encrypt_key = 0;
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
  ThreadContexts* t = ThisThread();
  MutexLock lock(&t->mu);
  const size_t n = out.size();
  // EVP's ctrl takes a non-const pointer; the tag is copied rather than cast away.
  uint8_t tag[kAesGcmTagSize];
  std::memcpy(tag, ciphertext_and_tag.data() + n, kAesGcmTagSize);
  int written = 0;
  const bool ok =
      Prepare(t->decrypt, t->decrypt_key, id_, key_, nonce.data(), /*encrypt=*/false) &&
      EVP_CIPHER_CTX_ctrl(t->decrypt.get(), EVP_CTRL_GCM_SET_TAG, kAesGcmTagSize, tag) == 1 &&
      UpdateAll(EVP_DecryptUpdate, t->decrypt.get(), aad.data(), aad.size(), nullptr) &&
      UpdateAll(EVP_DecryptUpdate, t->decrypt.get(), ciphertext_and_tag.data(), n, out.data()) &&
      EVP_DecryptFinal_ex(t->decrypt.get(), out.data() + n, &written) == 1;
  if (!ok) {
    // Unauthenticated plaintext must never reach the caller. A failed tag leaves the
    // context usable (the next call sets a new IV), so it keeps its key.
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

absl::Status NonceBytesBulk(std::span<uint8_t> out) {
  if (out.size() % kAesGcmNonceSize != 0) {
    return absl::InvalidArgumentError("nonce bytes must be a multiple of 12");
  }
  // Fresh CSPRNG output for the whole span: one RAND_bytes call for all the batch's
  // nonces, and no per-thread buffer (so no fork check) involved.
  return RandomBytes(out);
}

absl::StatusOr<SecretBytes> RandomSecret(size_t size) {
  SecretBytes secret(size);
  KMS_RETURN_IF_ERROR(RandomBytes(secret.mutable_span()));
  return secret;
}

}  // namespace kms::crypto
