#include "src/common/ssl_ptr.h"

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/params.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>

#include <type_traits>

// The forward declarations in the header name the same types as OpenSSL's headers.
static_assert(std::is_same_v<GENERAL_NAMES, stack_st_GENERAL_NAME>);

namespace kms::ssl_internal {

void Free(BIGNUM* p) { BN_free(p); }
void Free(BIO* p) { BIO_free(p); }
void Free(ECDSA_SIG* p) { ECDSA_SIG_free(p); }
void Free(EVP_CIPHER_CTX* p) { EVP_CIPHER_CTX_free(p); }
void Free(EVP_MD_CTX* p) { EVP_MD_CTX_free(p); }
void Free(EVP_PKEY* p) { EVP_PKEY_free(p); }
void Free(EVP_PKEY_CTX* p) { EVP_PKEY_CTX_free(p); }
void Free(GENERAL_NAME* p) { GENERAL_NAME_free(p); }
void Free(stack_st_GENERAL_NAME* p) { GENERAL_NAMES_free(p); }
void Free(OSSL_PARAM* p) { OSSL_PARAM_free(p); }
void Free(OSSL_PARAM_BLD* p) { OSSL_PARAM_BLD_free(p); }
void Free(PKCS8_PRIV_KEY_INFO* p) { PKCS8_PRIV_KEY_INFO_free(p); }
void Free(X509* p) { X509_free(p); }
void Free(X509_EXTENSION* p) { X509_EXTENSION_free(p); }
void Free(X509_STORE* p) { X509_STORE_free(p); }
void Free(X509_STORE_CTX* p) { X509_STORE_CTX_free(p); }

}  // namespace kms::ssl_internal
