// The fuzz targets, one function per parser of untrusted bytes. Each has the shape of
// LLVMFuzzerTestOneInput and returns 0; a broken invariant aborts (FUZZ_CHECK).
//
// They are plain functions so that two drivers can call them: libfuzzer_main.cc (the
// clang -fsanitize=fuzzer build, KMS_BUILD_FUZZERS=ON) and fuzz_corpus_test.cc (every
// build: the checked-in corpus through every target, as a unit test).
#pragma once

#include <cstddef>
#include <cstdint>

namespace kms::fuzz {

int FuzzBase64(const uint8_t* data, size_t size);      // Base64Decode, Base64UrlDecode
int FuzzField(const uint8_t* data, size_t size);       // ParseField, OpenField, FieldAad
int FuzzConfig(const uint8_t* data, size_t size);      // config::ParseConfig
int FuzzPolicy(const uint8_t* data, size_t size);      // PolicyAuthorizer::FromJson
int FuzzJwtToken(const uint8_t* data, size_t size);    // jwt::ParseCompact, VerifyCompact
int FuzzJwtClaims(const uint8_t* data, size_t size);   // jwt::BuildClaims (+ sign, verify)
int FuzzWrappedDek(const uint8_t* data, size_t size);  // keys::WrappedDekKekVersion
int FuzzGrpcRequest(const uint8_t* data, size_t size);  // every RPC: DecodeRequest + checks
int FuzzInvalidationEvent(const uint8_t* data, size_t size);  // coord::DecodeInvalidationEvent
int FuzzWrappedKek(const uint8_t* data, size_t size);  // hsm::WrappedKekMechanismName
int FuzzJwk(const uint8_t* data, size_t size);         // Es256PublicKey::FromJwk
int FuzzHttpRequest(const uint8_t* data, size_t size);  // http::ParseRequestBytes
int FuzzEncryptedFile(const uint8_t* data, size_t size);  // ReadFileHeader, DecryptFileStream
int FuzzSigV4(const uint8_t* data, size_t size);  // xks::ParseAuthorization, SigV4Verifier

}  // namespace kms::fuzz
