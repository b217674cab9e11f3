// Whether the gRPC listener still accepts connections, seen from outside: connect to
// our own port and complete a TLS handshake with it.
//
// Why a probe and not descriptor accounting: gRPC 1.51 stops accepting for good after
// one accept4() that fails with EMFILE/ENFILE (it logs the error once and never re-arms
// the listener), and the kernel keeps completing TCP handshakes into the backlog, so
// neither the process's descriptor count (it recovers once idle connections time out)
// nor a TCP connect tells whether gRPC still accepts. Only an answer from the handshaker
// does: the server's TLS Finished proves that gRPC accepted the socket and ran its TLS
// handshake. The probe offers no client certificate; gRPC then refuses the connection
// after its Finished (which is all the probe waits for), so the probe never becomes a
// caller and needs no credential.
#pragma once

#include <chrono>
#include <string>
#include <string_view>

#include "kms/common/status.h"

namespace kms::server {

// Connects to `listen_address` ("host:port", "[v6]:port"; a wildcard host 0.0.0.0 / [::]
// probes the loopback address) with `port` replacing the address's port (the port gRPC
// bound), and runs a TLS 1.3 client handshake, all within `timeout`. OK when the server
// completed its side; UNAVAILABLE naming the step that failed otherwise (including
// EMFILE in this process: then kmsd cannot serve either). Blocking; thread-safe.
absl::Status ProbeTlsListener(std::string_view listen_address, int port,
                              std::chrono::milliseconds timeout);

}  // namespace kms::server
