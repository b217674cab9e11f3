// Who is calling: the verified client certificate's identity.
#pragma once

#include <string>

#include "grpcpp/security/auth_context.h"

namespace kms::server {

// The URI SAN (spiffe://trust-domain/service) when the certificate has exactly one,
// else the first DNS SAN, else the subject CN; empty when the peer has no verified
// certificate (which mTLS rules out).
std::string PeerIdentity(const grpc::AuthContext& auth);

}  // namespace kms::server
