// The fixed ES256 key the JWT fuzz targets and their seeds use.
#pragma once

#include "src/jwt/es256.h"
#include "tests/fuzz/fuzz_util.h"

namespace kms::fuzz {

inline const jwt::Es256PrivateKey& FuzzEs256Key() {
  static const jwt::Es256PrivateKey* key = [] {
    SetSecretMemoryLocking(false);
    auto k = jwt::Es256PrivateKey::FromPkcs8Der(std::span(kEs256Pkcs8));
    FUZZ_CHECK(k.ok());
    return k->release();
  }();
  return *key;
}

}  // namespace kms::fuzz
