// CRC32C (Castagnoli; iSCSI, RFC 3720 §12.1 and Appendix B.4): the checksum Google Cloud
// KMS puts on its requests and responses, which kmsd's data-plane RPCs carry the same
// way (the *_crc32c fields of kms.v1.KeyService).
//
// Debian 12 has no C/C++ CRC32C library and this Abseil has no absl/crc, so it is our
// own: the SSE4.2 CRC32 instruction where the CPU has it (checked once at run time),
// else a portable slicing-by-8 table. Both give the same values, tested against the
// RFC 3720 vectors. Pure functions; thread-safe.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>

namespace kms {

// CRC32C of `data` (initial value and final XOR 0xFFFFFFFF, reflected polynomial
// 0x82F63B78): Crc32c("123456789") == 0xE3069283.
uint32_t Crc32c(std::span<const uint8_t> data);
uint32_t Crc32c(std::string_view data);
// Continues a CRC32C: Crc32cExtend(Crc32c(a), b) == Crc32c(a ‖ b).
uint32_t Crc32cExtend(uint32_t crc, std::span<const uint8_t> data);

// The portable table implementation, always (for tests and benchmarks).
uint32_t Crc32cPortable(uint32_t crc, std::span<const uint8_t> data);
// Whether Crc32c uses the CPU's CRC32 instruction.
bool Crc32cHardware();

}  // namespace kms
