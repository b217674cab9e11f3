// Who is calling: the identity in a verified client certificate (DESIGN §8), by one rule
// for every door. The door reads the certificate's names (gRPC's auth context, the
// HTTPS server's peer certificate) and this decides.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace kms::server {

// The names of a verified client certificate, as its door read them.
struct CertificateNames {
  // The SPIFFE id (spiffe://trust-domain/workload) when the certificate has exactly one
  // URI SAN and it is one; else empty.
  std::string spiffe_id;
  std::vector<std::string> uri_sans;  // every URI SAN
  std::vector<std::string> dns_sans;  // every DNS SAN, in certificate order
  std::string common_name;            // the subject CN
};

// The SPIFFE id, else the first DNS SAN, else the subject CN. A certificate that carries
// URI SANs but no single SPIFFE id has no identity (empty), and neither has a CN shaped
// like a URI: falling back would let "CN=spiffe://..." pose as a SPIFFE id.
std::string IdentityOf(const CertificateNames& names);

// A SPIFFE ID as the SPIFFE ID specification (SPIFFE-ID.md, section 2) defines it and
// gRPC checks it: "spiffe://", a trust domain of [a-z0-9._-], then optional path
// segments of [A-Za-z0-9._-] (none empty, ".", ".."), no query or fragment, at most
// 2048 bytes.
bool IsValidSpiffeId(std::string_view id);

// The SPIFFE id among `uri_sans` as gRPC derives peer_spiffe_id: exactly one URI SAN,
// and it is a valid SPIFFE ID; else empty.
std::string SpiffeIdOf(const std::vector<std::string>& uri_sans);

// Sorts one subjectAltName value as gRPC's auth context lists them (no type tags): an
// IP address (ignored for identity), an e-mail address (ignored), a URI, or a DNS name.
enum class SanKind { kDns, kUri, kIp, kEmail };
SanKind ClassifySan(const std::string& san);

}  // namespace kms::server
