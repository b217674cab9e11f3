#include "src/common/ssl_ptr.h"

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>

#include <utility>

#include "gtest/gtest.h"

namespace kms {
namespace {

int g_bio_frees = 0;

long CountFrees(BIO*, int oper, const char*, size_t, int, long, int ret, size_t*) {
  if (oper == BIO_CB_FREE) ++g_bio_frees;
  return ret;
}

TEST(SslUniquePtrTest, FreesItsObjectWhenDestroyedOrReset) {
  g_bio_frees = 0;
  {
    SslUniquePtr<BIO> bio(BIO_new(BIO_s_mem()));
    ASSERT_NE(bio, nullptr);
    BIO_set_callback_ex(bio.get(), CountFrees);
  }
  EXPECT_EQ(g_bio_frees, 1);

  SslUniquePtr<BIO> bio(BIO_new(BIO_s_mem()));
  ASSERT_NE(bio, nullptr);
  BIO_set_callback_ex(bio.get(), CountFrees);
  SslUniquePtr<BIO> moved = std::move(bio);
  EXPECT_EQ(g_bio_frees, 1);
  moved.reset();
  EXPECT_EQ(g_bio_frees, 2);
}

TEST(SslUniquePtrTest, ReleasedObjectIsNotFreed) {
  g_bio_frees = 0;
  BIO* raw = nullptr;
  {
    SslUniquePtr<BIO> bio(BIO_new(BIO_s_mem()));
    ASSERT_NE(bio, nullptr);
    BIO_set_callback_ex(bio.get(), CountFrees);
    raw = bio.release();
  }
  EXPECT_EQ(g_bio_frees, 0);
  BIO_free(raw);
  EXPECT_EQ(g_bio_frees, 1);
}

// Every supported type owns what its constructor made (a wrong free function would
// corrupt the heap here; the sanitizer builds would also see a leak).
TEST(SslUniquePtrTest, EverySupportedTypeHoldsAFreshObject) {
  SslUniquePtr<BIGNUM> bn(BN_new());
  SslUniquePtr<ECDSA_SIG> sig(ECDSA_SIG_new());
  SslUniquePtr<EVP_CIPHER_CTX> cipher_ctx(EVP_CIPHER_CTX_new());
  SslUniquePtr<EVP_MD_CTX> md_ctx(EVP_MD_CTX_new());
  SslUniquePtr<EVP_PKEY> pkey(EVP_EC_gen("P-256"));
  SslUniquePtr<EVP_PKEY_CTX> pkey_ctx(EVP_PKEY_CTX_new_from_pkey(nullptr, pkey.get(), nullptr));
  SslUniquePtr<GENERAL_NAME> name(GENERAL_NAME_new());
  SslUniquePtr<GENERAL_NAMES> names(GENERAL_NAMES_new());
  SslUniquePtr<OSSL_PARAM_BLD> bld(OSSL_PARAM_BLD_new());
  ASSERT_NE(bld, nullptr);
  ASSERT_EQ(OSSL_PARAM_BLD_push_int(bld.get(), "n", 1), 1);
  SslUniquePtr<OSSL_PARAM> params(OSSL_PARAM_BLD_to_param(bld.get()));
  SslUniquePtr<PKCS8_PRIV_KEY_INFO> p8(EVP_PKEY2PKCS8(pkey.get()));
  SslUniquePtr<X509> cert(X509_new());
  SslUniquePtr<X509_EXTENSION> ext(X509_EXTENSION_new());
  SslUniquePtr<X509_STORE> store(X509_STORE_new());
  SslUniquePtr<X509_STORE_CTX> store_ctx(X509_STORE_CTX_new());
  for (const void* p :
       {static_cast<const void*>(bn.get()), static_cast<const void*>(sig.get()),
        static_cast<const void*>(cipher_ctx.get()), static_cast<const void*>(md_ctx.get()),
        static_cast<const void*>(pkey.get()), static_cast<const void*>(pkey_ctx.get()),
        static_cast<const void*>(name.get()), static_cast<const void*>(names.get()),
        static_cast<const void*>(params.get()), static_cast<const void*>(p8.get()),
        static_cast<const void*>(cert.get()), static_cast<const void*>(ext.get()),
        static_cast<const void*>(store.get()), static_cast<const void*>(store_ctx.get())}) {
    EXPECT_NE(p, nullptr);
  }
}

}  // namespace
}  // namespace kms
