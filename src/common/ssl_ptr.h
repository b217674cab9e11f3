// One owner type for OpenSSL objects (Tink's SslUniquePtr habit):
//
//   SslUniquePtr<EVP_PKEY> key(EVP_EC_gen("P-256"));
//
// frees with the type's own *_free function. Only the types listed below are supported
// (another type does not compile: add its Free overload here and in ssl_ptr.cc).
//
// The header pulls in only OpenSSL's type names (<openssl/types.h>, plus four forward
// declarations of names that OpenSSL declares elsewhere), not its function headers, so
// headers such as src/jwt/es256.h can hold an SslUniquePtr without exposing OpenSSL's API
// to their includers. ssl_ptr.cc includes the real headers, so a forward declaration that
// went stale would not compile. The deleters are null-safe, like OpenSSL's *_free.
#pragma once

#include <openssl/types.h>

#include <memory>

// Declared in <openssl/ec.h>, <openssl/x509.h> and <openssl/x509v3.h> (same tags).
typedef struct ECDSA_SIG_st ECDSA_SIG;
typedef struct X509_extension_st X509_EXTENSION;
typedef struct GENERAL_NAME_st GENERAL_NAME;
struct stack_st_GENERAL_NAME;  // GENERAL_NAMES, i.e. STACK_OF(GENERAL_NAME)

namespace kms {

// The supported types, each freed by OpenSSL's own function (defined in ssl_ptr.cc).
namespace ssl_internal {
void Free(BIGNUM* p);                 // BN_free
void Free(BIO* p);                    // BIO_free
void Free(ECDSA_SIG* p);              // ECDSA_SIG_free
void Free(EVP_CIPHER_CTX* p);         // EVP_CIPHER_CTX_free
void Free(EVP_MD_CTX* p);             // EVP_MD_CTX_free
void Free(EVP_PKEY* p);               // EVP_PKEY_free
void Free(EVP_PKEY_CTX* p);           // EVP_PKEY_CTX_free
void Free(GENERAL_NAME* p);           // GENERAL_NAME_free
void Free(stack_st_GENERAL_NAME* p);  // GENERAL_NAMES_free (the names too)
void Free(OSSL_PARAM* p);             // OSSL_PARAM_free (the whole array)
void Free(OSSL_PARAM_BLD* p);         // OSSL_PARAM_BLD_free
void Free(PKCS8_PRIV_KEY_INFO* p);    // PKCS8_PRIV_KEY_INFO_free (cleanses the key)
void Free(X509* p);                   // X509_free
void Free(X509_EXTENSION* p);         // X509_EXTENSION_free
void Free(X509_STORE* p);             // X509_STORE_free
void Free(X509_STORE_CTX* p);         // X509_STORE_CTX_free
}  // namespace ssl_internal

template <typename T>
struct SslDeleter {
  void operator()(T* p) const { ssl_internal::Free(p); }
};

template <typename T>
using SslUniquePtr = std::unique_ptr<T, SslDeleter<T>>;

}  // namespace kms
