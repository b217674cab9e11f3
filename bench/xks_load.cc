// xks_load: XKS Encrypt latency against a running kmsd at a fixed request rate (open
// loop: each request has a scheduled send time, and its latency is measured from that
// time, so a stall is not hidden by the client waiting for it). Each of N connections is
// a TLS 1.3 keep-alive connection on its own thread sending every N/rate seconds.
// Requests are SigV4-signed (kms-xks-proxy) with kmsd's own signer functions. Prints the
// achieved rate, errors and latency percentiles (docs/benchmarks.md).
//
// Usage: xks_load --port P --ca CA --access-key-id ID --secret-file F [--host localhost]
//                 [--region R] [--prefix /p] [--key TENANT] [--rate 1800] [--seconds 30]
//                 [--connections 8] [--bytes 32]
#include <netdb.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "src/common/base64.h"
#include "src/server/xks/sigv4.h"

namespace {

using Clock = std::chrono::steady_clock;

struct Args {
  std::string host = "localhost";
  int port = 0;
  std::string ca, access_key_id, secret_file, region = "us-east-1", prefix, key = "xks-bench";
  double rate = 1800;
  int seconds = 30;
  int connections = 8;
  size_t bytes = 32;
};

std::string AmzDate(std::time_t t) {
  char buf[32];
  std::tm tm{};
  gmtime_r(&t, &tm);
  std::strftime(buf, sizeof(buf), "%Y%m%dT%H%M%SZ", &tm);
  return buf;
}

class Connection {
 public:
  ~Connection() {
    if (ssl_) SSL_free(ssl_);
    if (fd_ >= 0) close(fd_);
  }
  bool Open(SSL_CTX* ctx, const Args& a) {
    addrinfo hints{}, *res = nullptr;
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(a.host.c_str(), std::to_string(a.port).c_str(), &hints, &res) != 0) return false;
    fd_ = socket(res->ai_family, SOCK_STREAM, 0);
    bool ok = fd_ >= 0 && connect(fd_, res->ai_addr, res->ai_addrlen) == 0;
    freeaddrinfo(res);
    if (!ok) return false;
    ssl_ = SSL_new(ctx);
    SSL_set_fd(ssl_, fd_);
    SSL_set_tlsext_host_name(ssl_, a.host.c_str());
    return SSL_connect(ssl_) == 1;
  }
  // Sends `request`, reads one response; returns the status code or -1.
  int RoundTrip(const std::string& request) {
    if (SSL_write(ssl_, request.data(), static_cast<int>(request.size())) <= 0) return -1;
    std::string in;
    char buf[8192];
    size_t header_end = std::string::npos;
    size_t need = 0;
    while (true) {
      int n = SSL_read(ssl_, buf, sizeof(buf));
      if (n <= 0) return -1;
      in.append(buf, static_cast<size_t>(n));
      if (header_end == std::string::npos) {
        header_end = in.find("\r\n\r\n");
        if (header_end == std::string::npos) continue;
        size_t cl = in.find("Content-Length: ");
        if (cl == std::string::npos) cl = in.find("content-length: ");
        need = header_end + 4 + (cl == std::string::npos ? 0 : std::stoul(in.substr(cl + 16)));
      }
      if (in.size() >= need) break;
    }
    return std::stoi(in.substr(9, 3));
  }

 private:
  int fd_ = -1;
  SSL* ssl_ = nullptr;
};

}  // namespace

int main(int argc, char** argv) {
  Args a;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string k = argv[i], v = argv[i + 1];
    if (k == "--host") a.host = v;
    else if (k == "--port") a.port = std::stoi(v);
    else if (k == "--ca") a.ca = v;
    else if (k == "--access-key-id") a.access_key_id = v;
    else if (k == "--secret-file") a.secret_file = v;
    else if (k == "--region") a.region = v;
    else if (k == "--prefix") a.prefix = v;
    else if (k == "--key") a.key = v;
    else if (k == "--rate") a.rate = std::stod(v);
    else if (k == "--seconds") a.seconds = std::stoi(v);
    else if (k == "--connections") a.connections = std::stoi(v);
    else if (k == "--bytes") a.bytes = std::stoul(v);
    else {
      std::fprintf(stderr, "unknown argument %s\n", k.c_str());
      return 2;
    }
  }
  std::ifstream sf(a.secret_file);
  std::string secret_text;
  std::getline(sf, secret_text);
  kms::SecretBytes secret(secret_text.size());
  std::copy(secret_text.begin(), secret_text.end(), secret.mutable_span().begin());

  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
  SSL_CTX_load_verify_locations(ctx, a.ca.c_str(), nullptr);
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);

  const std::string path = a.prefix + "/kms/xks/v1/keys/" + a.key + "/encrypt";
  const std::string host_header = a.host + ":" + std::to_string(a.port);
  const std::string plaintext(a.bytes, 'k');
  const std::string body =
      std::string(R"({"requestMetadata":{"awsPrincipalArn":"arn:aws:iam::123456789012:user/Bench",)") +
      R"("kmsKeyArn":"arn:aws:kms:us-east-1:123456789012:key/bench","kmsOperation":"GenerateDataKey",)" +
      R"("kmsRequestId":"bench"},"plaintext":")" +
      kms::Base64Encode(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(plaintext.data()),
                                                 plaintext.size())) +
      R"(","encryptionAlgorithm":"AES_GCM"})";

  // One signed request per second of wall time is enough: the signature is valid for 5
  // minutes, and signing is not what is measured.
  std::map<std::time_t, std::string> signed_requests;
  const std::time_t start_wall = std::time(nullptr);
  for (int s = 0; s <= a.seconds + 2; ++s) {
    const std::string date = AmzDate(start_wall + s);
    std::vector<std::pair<std::string, std::string>> headers = {
        {"Host", host_header}, {"X-Amz-Date", date}, {"Content-Type", "application/json"}};
    kms::server::xks::SignedRequest req{.method = "POST", .path = path, .query = "", .headers = headers, .body = body};
    const std::vector<std::string> signed_headers = {"content-type", "host", "x-amz-date"};
    std::string creq = kms::server::xks::CanonicalRequest(req, signed_headers).value();
    const std::string day = date.substr(0, 8);
    const std::string scope = day + "/" + a.region + "/kms-xks-proxy/aws4_request";
    const std::string sig = kms::server::xks::Signature(secret, day, a.region, "kms-xks-proxy",
                                                        kms::server::xks::StringToSign(date, scope, creq));
    signed_requests[start_wall + s] =
        "POST " + path + " HTTP/1.1\r\nHost: " + host_header + "\r\nX-Amz-Date: " + date +
        "\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
        "\r\nAuthorization: AWS4-HMAC-SHA256 Credential=" + a.access_key_id + "/" + scope +
        ", SignedHeaders=content-type;host;x-amz-date, Signature=" + sig + "\r\n\r\n" + body;
  }

  std::vector<std::vector<double>> latencies(static_cast<size_t>(a.connections));
  std::atomic<uint64_t> errors{0}, non200{0};
  const auto interval = std::chrono::duration<double>(a.connections / a.rate);
  const auto t0 = Clock::now() + std::chrono::milliseconds(200);
  const auto end = t0 + std::chrono::seconds(a.seconds);
  std::vector<std::thread> threads;
  for (int c = 0; c < a.connections; ++c) {
    threads.emplace_back([&, c] {
      Connection conn;
      if (!conn.Open(ctx, a)) {
        errors++;
        std::fprintf(stderr, "connection %d failed\n", c);
        return;
      }
      auto& lat = latencies[static_cast<size_t>(c)];
      // Connections start staggered across one interval.
      auto next = t0 + std::chrono::duration_cast<Clock::duration>(interval * (double(c) / a.connections));
      while (next < end) {
        std::this_thread::sleep_until(next);
        const std::time_t wall = std::time(nullptr);
        auto it = signed_requests.upper_bound(wall);
        const std::string& request = (--it)->second;
        int status = conn.RoundTrip(request);
        const auto done = Clock::now();
        if (status < 0) {
          errors++;
          return;
        }
        if (status != 200) non200++;
        lat.push_back(std::chrono::duration<double, std::milli>(done - next).count());
        next += std::chrono::duration_cast<Clock::duration>(interval);
      }
    });
  }
  for (auto& t : threads) t.join();
  std::vector<double> all;
  for (auto& l : latencies) all.insert(all.end(), l.begin(), l.end());
  std::sort(all.begin(), all.end());
  auto pct = [&](double p) {
    return all.empty() ? 0.0 : all[std::min(all.size() - 1, static_cast<size_t>(p * all.size()))];
  };
  std::printf("requests=%zu seconds=%d achieved_rate=%.0f/s errors=%llu non_200=%llu\n", all.size(),
              a.seconds, all.size() / double(a.seconds), static_cast<unsigned long long>(errors.load()),
              static_cast<unsigned long long>(non200.load()));
  std::printf("latency_ms p50=%.2f p90=%.2f p99=%.2f p99.9=%.2f max=%.2f\n", pct(0.5), pct(0.9), pct(0.99),
              pct(0.999), all.empty() ? 0.0 : all.back());
  SSL_CTX_free(ctx);
  return errors.load() == 0 ? 0 : 1;
}
