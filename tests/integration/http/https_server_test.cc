// The HTTPS door against real TLS clients: curl and `openssl s_client` (separate
// processes), and a small blocking OpenSSL client in this file for what those tools cannot
// do on cue (keep one connection open, send a header one byte a second). Everything on
// 127.0.0.1 with port 0; every wait is bounded.
#include "src/server/http/https_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "src/dev/dev_pki.h"
#include "tests/test_common/kmsd_process.h"
#include "tests/test_common/temp_dir.h"

namespace kms::server::http {
namespace {

using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;
using test::RunCommand;

std::string Pem(const SecretBytes& s) { return std::string(reinterpret_cast<const char*>(s.data()), s.size()); }

// A blocking TLS 1.3 client on one connection.
class TlsClient {
 public:
  // Connects to 127.0.0.1:`port`; with `handshake`, completes the TLS handshake (verifying
  // the server against `ca`), presenting `cert`/`key` when given. nullptr on failure.
  static std::unique_ptr<TlsClient> Connect(int port, const std::string& ca, bool handshake = true,
                                            const std::string& cert = "", const std::string& key = "") {
    std::unique_ptr<TlsClient> c(new TlsClient());
    c->fd_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(c->fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) return nullptr;
    c->SetReadTimeout(milliseconds(3000));
    c->ctx_ = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_min_proto_version(c->ctx_, TLS1_3_VERSION);
    SSL_CTX_load_verify_locations(c->ctx_, ca.c_str(), nullptr);
    SSL_CTX_set_verify(c->ctx_, SSL_VERIFY_PEER, nullptr);
    if (!cert.empty()) {
      SSL_CTX_use_certificate_chain_file(c->ctx_, cert.c_str());
      SSL_CTX_use_PrivateKey_file(c->ctx_, key.c_str(), SSL_FILETYPE_PEM);
    }
    c->ssl_ = SSL_new(c->ctx_);
    SSL_set_fd(c->ssl_, c->fd_);
    SSL_set_tlsext_host_name(c->ssl_, "localhost");
    if (handshake && SSL_connect(c->ssl_) != 1) return nullptr;
    return c;
  }
  ~TlsClient() {
    if (ssl_) SSL_free(ssl_);
    if (ctx_) SSL_CTX_free(ctx_);
    if (fd_ >= 0) close(fd_);
  }

  bool Send(std::string_view data) {
    return SSL_write(ssl_, data.data(), static_cast<int>(data.size())) == static_cast<int>(data.size());
  }

  // One response: header and a Content-Length body. "" when the connection ends first or
  // `timeout` passes.
  std::string ReadResponse(milliseconds timeout = milliseconds(3000)) {
    std::string got;
    const auto until = Clock::now() + timeout;
    while (Clock::now() < until) {
      size_t end = got.find("\r\n\r\n");
      if (end != std::string::npos) {
        size_t at = got.find("Content-Length: ");
        size_t length = 0;
        if (at != std::string::npos) {
          std::string digits = got.substr(at + 16, got.find("\r\n", at) - at - 16);
          if (!absl::SimpleAtoi(digits, &length)) return "";
        }
        if (got.size() >= end + 4 + length) return got.substr(0, end + 4 + length);
      }
      char buf[4096];
      int n = SSL_read(ssl_, buf, sizeof(buf));
      if (n > 0) {
        got.append(buf, static_cast<size_t>(n));
      } else if (SSL_get_error(ssl_, n) != SSL_ERROR_WANT_READ) {
        return "";
      }
    }
    return "";
  }

  // True when the server ends the connection within `timeout` (bytes it sends first are
  // dropped).
  bool ClosedWithin(milliseconds timeout) {
    SetReadTimeout(milliseconds(100));
    const auto until = Clock::now() + timeout;
    while (Clock::now() < until) {
      char buf[512];
      ERR_clear_error();
      int n = SSL_read(ssl_, buf, sizeof(buf));
      if (n <= 0 && SSL_get_error(ssl_, n) != SSL_ERROR_WANT_READ) return true;
    }
    return false;
  }

  int fd() const { return fd_; }

 private:
  TlsClient() = default;
  void SetReadTimeout(milliseconds t) {
    timeval tv{.tv_sec = static_cast<time_t>(t.count() / 1000),
               .tv_usec = static_cast<suseconds_t>((t.count() % 1000) * 1000)};
    setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  }
  int fd_ = -1;
  SSL_CTX* ctx_ = nullptr;
  SSL* ssl_ = nullptr;
};

class HttpsServerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    signal(SIGPIPE, SIG_IGN);  // writes to connections the server closed
    dir_ = new test::TempDir("kmsd-https-test-");
    auto ca = dev::CreateCa("test CA", 1);
    auto other_ca = dev::CreateCa("other CA", 1);
    ASSERT_TRUE(ca.ok() && other_ca.ok());
    auto server = dev::IssueServerCert(*ca, {"localhost"}, {"127.0.0.1"}, 1);
    auto client = dev::IssueClientCert(*ca, "billing", "spiffe://kmsd.test/billing", 1);
    auto stranger = dev::IssueClientCert(*other_ca, "mallory", "spiffe://kmsd.test/billing", 1);
    ASSERT_TRUE(server.ok() && client.ok() && stranger.ok());
    dir_->Write("ca.pem", ca->cert_pem, 0644);
    dir_->Write("server.pem", server->cert_pem, 0644);
    dir_->Write("server.key", Pem(server->key_pem));
    dir_->Write("client.pem", client->cert_pem, 0644);
    dir_->Write("client.key", Pem(client->key_pem));
    dir_->Write("stranger.pem", stranger->cert_pem, 0644);
    dir_->Write("stranger.key", Pem(stranger->key_pem));
  }
  static void TearDownTestSuite() { delete dir_; }

  void TearDown() override {
    if (server_) server_->Stop();
  }

  static std::string File(const char* name) { return dir_->Join(name); }

  // Limits small enough for tests to hit them quickly.
  static config::HttpConfig TestLimits() {
    config::HttpConfig l;
    l.max_connections = 64;
    l.max_connections_per_ip = 64;
    l.handshake_timeout_ms = 1500;
    l.header_timeout_ms = 2000;
    l.idle_timeout_ms = 5000;
    l.request_timeout_ms = 3000;
    l.max_header_bytes = 4096;
    l.max_body_bytes = 1024;
    l.worker_threads = 1;
    l.max_queued_requests = 2;
    return l;
  }

  void StartServer(const config::HttpConfig& limits = TestLimits()) {
    config::TlsConfig tls{.cert_file = File("server.pem"), .key_file = File("server.key"),
                          .client_ca_file = File("ca.pem")};
    auto server = HttpsServer::Bind("127.0.0.1:0", tls, limits);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    server_->Handle("/healthz", [](const Request&) { return Response{.body = "ok\n"}; });
    server_->Handle("/echo", [](const Request& r) {
      std::string who = r.authenticated() ? r.client_certificate->uri_sans.at(0) : "anonymous";
      return Response{.body = absl::StrCat(r.method, " ", r.path, " q=", r.query, " x=",
                                           std::string(r.Header("x-test").value_or("-")), " who=", who,
                                           " body=", r.body)};
    }, Route{.methods = {"POST", "PUT"}});
    server_->Handle("/whoami", [](const Request& r) {
      if (!r.authenticated()) return Response{.body = "anonymous"};
      return Response{.body = absl::StrCat(r.client_certificate->uri_sans.at(0), " cn=",
                                           r.client_certificate->common_name)};
    });
    server_->Handle("/slow", [](const Request& r) {
      int ms = 0;
      if (!absl::SimpleAtoi(r.query, &ms) || ms > 10000) ms = 0;
      std::this_thread::sleep_for(milliseconds(ms));
      return Response{.body = "slow done\n"};
    }, Route{.kind = HandlerKind::kBlocking});
    // A door's root (the Vault door's /v1/): prefix routes, a body limit of their own,
    // refusals in JSON; an exact route and a longer prefix take precedence.
    auto named = [](std::string name) {
      return [name](const Request& r) {
        return Response{.body = absl::StrCat(name, " ", r.method, " ", r.path, " ", r.body.size())};
      };
    };
    server_->HandlePrefix("/v1/", named("prefix"),
                          Route{.methods = {"GET", "POST", "LIST"}, .kind = HandlerKind::kBlocking,
                                .max_body_bytes = 4096, .json_errors = true});
    server_->HandlePrefix("/v1/longer/", named("longer"), Route{.methods = {"GET"}});
    server_->Handle("/v1/exact", named("exact"));
    server_->Start();
  }

  std::string Url(const std::string& path) const {
    return absl::StrCat("https://127.0.0.1:", server_->port(), path);
  }
  // curl with our CA; `extra` goes before the URL. stderr joins stdout.
  test::CommandResult Curl(const std::string& extra, const std::string& path) const {
    return RunCommand(absl::StrCat("curl -sS -i --max-time 10 --tlsv1.3 --cacert ", File("ca.pem"), " ",
                                   extra, " '", Url(path), "' 2>&1"));
  }
  std::unique_ptr<TlsClient> Client() const { return TlsClient::Connect(server_->port(), File("ca.pem")); }

  static test::TempDir* dir_;
  std::unique_ptr<HttpsServer> server_;
};

test::TempDir* HttpsServerTest::dir_ = nullptr;

constexpr char kGetHealth[] = "GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n";

TEST_F(HttpsServerTest, ServesARouteWithHstsAndContentType) {
  StartServer();
  auto got = Curl("", "/healthz");
  ASSERT_EQ(got.exit_code, 0) << got.out;
  EXPECT_EQ(got.out.rfind("HTTP/1.1 200 OK\r\n", 0), 0u) << got.out;
  EXPECT_NE(got.out.find("Strict-Transport-Security: max-age=63072000; includeSubDomains; preload\r\n"),
            std::string::npos);
  EXPECT_NE(got.out.find("Content-Type: text/plain; charset=utf-8\r\n"), std::string::npos);
  EXPECT_NE(got.out.find("Content-Length: 3\r\n"), std::string::npos);
  EXPECT_EQ(got.out.substr(got.out.size() - 3), "ok\n");
}

TEST_F(HttpsServerTest, HeadAnswersLikeGetWithoutTheBody) {
  StartServer();
  auto got = Curl("--head", "/healthz");
  ASSERT_EQ(got.exit_code, 0) << got.out;
  EXPECT_EQ(got.out.rfind("HTTP/1.1 200 OK\r\n", 0), 0u) << got.out;
  EXPECT_NE(got.out.find("Content-Length: 3\r\n"), std::string::npos);
  EXPECT_EQ(got.out.find("ok\n"), std::string::npos);
}

TEST_F(HttpsServerTest, KeepsTheConnectionForSeveralRequests) {
  StartServer();
  auto c = Client();
  ASSERT_NE(c, nullptr);
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(c->Send(kGetHealth));
    EXPECT_EQ(c->ReadResponse().rfind("HTTP/1.1 200 OK\r\n", 0), 0u) << "request " << i;
  }
}

TEST_F(HttpsServerTest, HandlerSeesMethodPathQueryHeadersAndBody) {
  StartServer();
  auto got = Curl("-X PUT -H 'X-Test: yes' --data-binary hello", "/echo?a=1&b=2");
  ASSERT_EQ(got.exit_code, 0) << got.out;
  EXPECT_NE(got.out.find("PUT /echo q=a=1&b=2 x=yes who=anonymous body=hello"), std::string::npos)
      << got.out;
}

TEST_F(HttpsServerTest, UnknownPathIs404AndWrongMethodIs405WithAllow) {
  StartServer();
  auto missing = Curl("", "/nope");
  EXPECT_EQ(missing.out.rfind("HTTP/1.1 404 Not Found\r\n", 0), 0u) << missing.out;
  auto wrong = Curl("-X POST --data-binary x", "/healthz");
  EXPECT_EQ(wrong.out.rfind("HTTP/1.1 405 Method Not Allowed\r\n", 0), 0u) << wrong.out;
  EXPECT_NE(wrong.out.find("Allow: GET\r\n"), std::string::npos);
  EXPECT_NE(wrong.out.find("Strict-Transport-Security: "), std::string::npos);
}

TEST_F(HttpsServerTest, OversizedHeaderIs431) {
  StartServer();
  auto got = Curl(absl::StrCat("-H 'X-Big: ", std::string(8000, 'a'), "'"), "/healthz");
  EXPECT_EQ(got.out.rfind("HTTP/1.1 431 Request Header Fields Too Large\r\n", 0), 0u) << got.out.substr(0, 300);
  auto fits = Curl(absl::StrCat("-H 'X-Big: ", std::string(2000, 'a'), "'"), "/healthz");
  EXPECT_EQ(fits.out.rfind("HTTP/1.1 200 OK\r\n", 0), 0u) << fits.out.substr(0, 300);
}

TEST_F(HttpsServerTest, OversizedBodyIs413AndABodyWithinTheLimitIsServed) {
  StartServer();
  std::string body_file = dir_->Write("body-big", std::string(1025, 'b'), 0644);
  auto big = Curl(absl::StrCat("-H 'Expect:' --data-binary @", body_file), "/echo");
  EXPECT_EQ(big.out.rfind("HTTP/1.1 413 Payload Too Large\r\n", 0), 0u) << big.out.substr(0, 300);
  // Chunked, so the limit is met while reading rather than from Content-Length.
  auto chunked = Curl(absl::StrCat("-H 'Expect:' -H 'Transfer-Encoding: chunked' --data-binary @", body_file),
                      "/echo");
  EXPECT_EQ(chunked.out.rfind("HTTP/1.1 413 Payload Too Large\r\n", 0), 0u) << chunked.out.substr(0, 300);
  std::string fits_file = dir_->Write("body-fits", std::string(1024, 'b'), 0644);
  auto fits = Curl(absl::StrCat("-H 'Expect:' --data-binary @", fits_file), "/echo");
  EXPECT_EQ(fits.out.rfind("HTTP/1.1 200 OK\r\n", 0), 0u) << fits.out.substr(0, 300);
}

TEST_F(HttpsServerTest, PrefixRoutesHaveTheirOwnBodyLimitAndJsonRefusals) {
  StartServer();
  EXPECT_NE(Curl("", "/v1/a/b?x=1").out.find("prefix GET /v1/a/b 0"), std::string::npos);
  EXPECT_NE(Curl("-X LIST", "/v1/keys").out.find("prefix LIST /v1/keys 0"), std::string::npos);
  EXPECT_NE(Curl("", "/v1/exact").out.find("exact GET /v1/exact 0"), std::string::npos);
  EXPECT_NE(Curl("", "/v1/longer/x").out.find("longer GET /v1/longer/x 0"), std::string::npos);
  EXPECT_EQ(Curl("", "/v1").out.rfind("HTTP/1.1 404", 0), 0u);

  // Over the listener's 1024 bytes but within the route's 4096: served.
  std::string mid = dir_->Write("body-mid", std::string(3000, 'm'), 0644);
  auto fits = Curl(absl::StrCat("-H 'Expect:' --data-binary @", mid), "/v1/a");
  EXPECT_NE(fits.out.find("prefix POST /v1/a 3000"), std::string::npos) << fits.out.substr(0, 300);
  // Other routes keep the listener's limit, though the header was read under the largest.
  auto other = Curl(absl::StrCat("-H 'Expect:' --data-binary @", mid), "/echo");
  EXPECT_EQ(other.out.rfind("HTTP/1.1 413 Payload Too Large\r\n", 0), 0u) << other.out.substr(0, 300);
  EXPECT_NE(other.out.find("request body too large\n"), std::string::npos);

  std::string big = dir_->Write("body-over", std::string(4097, 'o'), 0644);
  for (const char* extra : {"", "-H 'Transfer-Encoding: chunked' "}) {
    auto over = Curl(absl::StrCat(extra, "-H 'Expect:' --data-binary @", big), "/v1/a");
    EXPECT_EQ(over.out.rfind("HTTP/1.1 413 Payload Too Large\r\n", 0), 0u) << extra << over.out.substr(0, 300);
    EXPECT_NE(over.out.find("Content-Type: application/json\r\n"), std::string::npos) << over.out;
    EXPECT_NE(over.out.find(R"({"errors":["request body too large"]})"), std::string::npos) << over.out;
  }
  auto wrong = Curl("-X DELETE", "/v1/a");
  EXPECT_EQ(wrong.out.rfind("HTTP/1.1 405", 0), 0u) << wrong.out;
  EXPECT_NE(wrong.out.find(R"({"errors":["method not allowed"]})"), std::string::npos) << wrong.out;
}

TEST_F(HttpsServerTest, MalformedRequestIs400) {
  StartServer();
  auto c = Client();
  ASSERT_NE(c, nullptr);
  ASSERT_TRUE(c->Send("GET /healthz HTTP/1.1\r\nHost: localhost\r\nBad Header\r\n\r\n"));
  EXPECT_EQ(c->ReadResponse().rfind("HTTP/1.1 400 Bad Request\r\n", 0), 0u);
}

// What `openssl s_client` negotiated: "TLSv1.3, Cipher is ..." or "(NONE), Cipher is (NONE)".
std::string Negotiated(const std::string& version, int port) {
  auto run = RunCommand(absl::StrCat("openssl s_client -connect 127.0.0.1:", port, " ", version, " 2>&1"), "Q\n");
  size_t at = run.out.find("New, ");
  if (at == std::string::npos) return "no handshake report: " + run.out;
  return run.out.substr(at + 5, run.out.find('\n', at) - at - 5);
}

TEST_F(HttpsServerTest, SpeaksTls13AndRefusesTls12) {
  StartServer();
  EXPECT_EQ(Negotiated("-tls1_3", server_->port()).rfind("TLSv1.3, Cipher is TLS_", 0), 0u);
  EXPECT_EQ(Negotiated("-tls1_2", server_->port()), "(NONE), Cipher is (NONE)");
}

TEST_F(HttpsServerTest, ClientCertificateIsOptionalVerifiedWhenSentAndRefusedFromAnotherCa) {
  StartServer();
  auto anonymous = Curl("", "/whoami");
  EXPECT_NE(anonymous.out.find("\r\n\r\nanonymous"), std::string::npos) << anonymous.out;
  auto known = Curl(absl::StrCat("--cert ", File("client.pem"), " --key ", File("client.key")), "/whoami");
  EXPECT_NE(known.out.find("\r\n\r\nspiffe://kmsd.test/billing cn=billing"), std::string::npos) << known.out;
  // A certificate that does not chain to the client CA ends the handshake: no request is
  // served under a name nobody vouched for.
  auto stranger = Curl(absl::StrCat("--cert ", File("stranger.pem"), " --key ", File("stranger.key")), "/whoami");
  EXPECT_NE(stranger.exit_code, 0) << stranger.out;
  EXPECT_EQ(stranger.out.find("spiffe://"), std::string::npos) << stranger.out;
}

TEST_F(HttpsServerTest, SlowHeadersDoNotStopHealthAndAreClosedAtTheHeaderDeadline) {
  StartServer();  // header deadline 2 s
  constexpr int kSlow = 32;
  std::vector<std::unique_ptr<TlsClient>> slow;
  for (int i = 0; i < kSlow; ++i) {
    slow.push_back(Client());
    ASSERT_NE(slow.back(), nullptr) << i;
  }
  const std::string header = "GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: aaaaaaaaaaaaaaaa";
  const auto started = Clock::now();
  // One header byte per connection per second until 2.5 s: past the deadline.
  std::thread dribble([&] {
    for (size_t at = 0; at < header.size() && Clock::now() - started < milliseconds(2500); ++at) {
      for (auto& c : slow) c->Send(header.substr(at, 1));  // fails quietly once closed
      std::this_thread::sleep_for(milliseconds(1000));
    }
  });
  std::this_thread::sleep_for(milliseconds(1200));  // every slow header is under way
  const auto asked = Clock::now();
  auto health = Curl("", "/healthz");
  const auto took = Clock::now() - asked;
  EXPECT_EQ(health.out.rfind("HTTP/1.1 200 OK\r\n", 0), 0u) << health.out;
  EXPECT_LT(took, milliseconds(1000));
  EXPECT_GE(server_->open_connections(), kSlow);
  dribble.join();  // the clients are this thread's again

  // Each slow header was cut off at its deadline (2 s after its first byte): a server that
  // only timed out silence between bytes would keep them past 3.5 s.
  int closed = 0;
  for (int i = 0; i < kSlow; ++i) {
    auto left = std::chrono::duration_cast<milliseconds>(started + milliseconds(3500) - Clock::now());
    if (slow[i]->ClosedWithin(std::max(left, milliseconds(100)))) ++closed;
  }
  EXPECT_EQ(closed, kSlow);
  EXPECT_LT(Clock::now() - started, milliseconds(4500));
}

TEST_F(HttpsServerTest, ASilentPeerIsClosedAtTheHandshakeDeadline) {
  StartServer();  // handshake deadline 1.5 s
  auto c = TlsClient::Connect(server_->port(), File("ca.pem"), /*handshake=*/false);
  ASSERT_NE(c, nullptr);
  const auto started = Clock::now();
  char byte;
  timeval tv{.tv_sec = 4, .tv_usec = 0};
  setsockopt(c->fd(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  EXPECT_LE(recv(c->fd(), &byte, 1, 0), 0);  // closed, not timed out on our side
  const auto took = Clock::now() - started;
  EXPECT_GE(took, milliseconds(1200));
  EXPECT_LT(took, milliseconds(3000));
}

TEST_F(HttpsServerTest, AnIdleKeepAliveConnectionIsClosedAtTheIdleDeadline) {
  config::HttpConfig limits = TestLimits();
  limits.idle_timeout_ms = 500;
  StartServer(limits);
  auto c = Client();
  ASSERT_NE(c, nullptr);
  ASSERT_TRUE(c->Send(kGetHealth));
  ASSERT_EQ(c->ReadResponse().rfind("HTTP/1.1 200 OK\r\n", 0), 0u);
  const auto started = Clock::now();
  EXPECT_TRUE(c->ClosedWithin(milliseconds(2500)));
  EXPECT_GE(Clock::now() - started, milliseconds(400));
}

TEST_F(HttpsServerTest, AtTheConnectionCapTheOldestIdleConnectionIsClosed) {
  config::HttpConfig limits = TestLimits();
  limits.max_connections = 3;
  StartServer(limits);
  std::vector<std::unique_ptr<TlsClient>> clients;
  for (int i = 0; i < 3; ++i) {
    clients.push_back(Client());
    ASSERT_NE(clients.back(), nullptr);
    ASSERT_TRUE(clients.back()->Send(kGetHealth));
    ASSERT_EQ(clients.back()->ReadResponse().rfind("HTTP/1.1 200 OK\r\n", 0), 0u);
    std::this_thread::sleep_for(milliseconds(20));  // distinct idle times
  }
  // The first to go idle is the first to go; the newcomer is served.
  auto newcomer = Client();
  ASSERT_NE(newcomer, nullptr);
  ASSERT_TRUE(newcomer->Send(kGetHealth));
  EXPECT_EQ(newcomer->ReadResponse().rfind("HTTP/1.1 200 OK\r\n", 0), 0u);
  EXPECT_TRUE(clients[0]->ClosedWithin(milliseconds(1000)));
  for (int i = 1; i < 3; ++i) {
    ASSERT_TRUE(clients[i]->Send(kGetHealth));
    EXPECT_EQ(clients[i]->ReadResponse().rfind("HTTP/1.1 200 OK\r\n", 0), 0u) << i;
  }
  EXPECT_EQ(server_->open_connections(), 3);
}

TEST_F(HttpsServerTest, AtTheCapWithNothingIdleANewConnectionIsRefused) {
  config::HttpConfig limits = TestLimits();
  limits.max_connections = 2;
  StartServer(limits);
  auto a = Client();
  auto b = Client();
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  ASSERT_TRUE(a->Send("GET /healthz HTTP/1.1\r\n"));  // both mid-header: not idle
  ASSERT_TRUE(b->Send("GET /healthz HTTP/1.1\r\n"));
  std::this_thread::sleep_for(milliseconds(100));
  EXPECT_EQ(Client(), nullptr);
  ASSERT_TRUE(a->Send("Host: localhost\r\n\r\n"));
  EXPECT_EQ(a->ReadResponse().rfind("HTTP/1.1 200 OK\r\n", 0), 0u);
}

TEST_F(HttpsServerTest, ConnectionsPerPeerAddressAreCapped) {
  config::HttpConfig limits = TestLimits();
  limits.max_connections_per_ip = 2;
  StartServer(limits);
  auto a = Client();
  auto b = Client();
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(Client(), nullptr);
  a.reset();  // a slot frees when a connection ends
  bool served = false;
  for (int i = 0; i < 50 && !served; ++i) {
    std::this_thread::sleep_for(milliseconds(20));
    auto c = Client();
    served = c && c->Send(kGetHealth) && c->ReadResponse().rfind("HTTP/1.1 200 OK\r\n", 0) == 0;
  }
  EXPECT_TRUE(served);
}

TEST_F(HttpsServerTest, BlockingHandlersLeaveTheEventLoopFreeAndAreBounded) {
  StartServer();  // one worker, two requests queued or running at most, request deadline 3 s
  auto first = Client();
  ASSERT_NE(first, nullptr);
  ASSERT_TRUE(first->Send("GET /slow?1500 HTTP/1.1\r\nHost: localhost\r\n\r\n"));
  auto second = Client();
  ASSERT_NE(second, nullptr);
  ASSERT_TRUE(second->Send("GET /slow?10 HTTP/1.1\r\nHost: localhost\r\n\r\n"));
  std::this_thread::sleep_for(milliseconds(100));
  // The queue is full: a third is told to come back, at once.
  auto third = Client();
  ASSERT_NE(third, nullptr);
  ASSERT_TRUE(third->Send("GET /slow?10 HTTP/1.1\r\nHost: localhost\r\n\r\n"));
  std::string busy = third->ReadResponse(milliseconds(500));
  EXPECT_EQ(busy.rfind("HTTP/1.1 503 Service Unavailable\r\n", 0), 0u) << busy;
  EXPECT_NE(busy.find("Retry-After: 1\r\n"), std::string::npos);
  // Health runs on the loop, not behind the worker.
  const auto asked = Clock::now();
  auto health = Client();
  ASSERT_NE(health, nullptr);
  ASSERT_TRUE(health->Send(kGetHealth));
  EXPECT_EQ(health->ReadResponse().rfind("HTTP/1.1 200 OK\r\n", 0), 0u);
  EXPECT_LT(Clock::now() - asked, milliseconds(500));
  EXPECT_NE(first->ReadResponse().find("slow done"), std::string::npos);
  EXPECT_NE(second->ReadResponse().find("slow done"), std::string::npos);
}

TEST_F(HttpsServerTest, AHandlerPastTheRequestDeadlineGets503) {
  config::HttpConfig limits = TestLimits();
  limits.request_timeout_ms = 500;
  limits.header_timeout_ms = 500;
  StartServer(limits);
  auto c = Client();
  ASSERT_NE(c, nullptr);
  const auto started = Clock::now();
  ASSERT_TRUE(c->Send("GET /slow?1500 HTTP/1.1\r\nHost: localhost\r\n\r\n"));
  std::string got = c->ReadResponse();
  EXPECT_EQ(got.rfind("HTTP/1.1 503 Service Unavailable\r\n", 0), 0u) << got;
  EXPECT_NE(got.find("Connection: close\r\n"), std::string::npos);
  EXPECT_LT(Clock::now() - started, milliseconds(1200));
}

TEST_F(HttpsServerTest, BindRefusesABadAddressAndMissingTlsFiles) {
  config::TlsConfig tls{.cert_file = File("server.pem"), .key_file = File("server.key"),
                        .client_ca_file = File("ca.pem")};
  EXPECT_EQ(HttpsServer::Bind("no-port", tls, TestLimits()).status().code(), absl::StatusCode::kInvalidArgument);
  config::TlsConfig missing = tls;
  missing.key_file = File("absent.key");
  EXPECT_FALSE(HttpsServer::Bind("127.0.0.1:0", missing, TestLimits()).ok());
  config::TlsConfig wrong_key = tls;
  wrong_key.key_file = File("client.key");
  EXPECT_EQ(HttpsServer::Bind("127.0.0.1:0", wrong_key, TestLimits()).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST_F(HttpsServerTest, StopClosesOpenConnections) {
  StartServer();
  auto c = Client();
  ASSERT_NE(c, nullptr);
  server_->Stop();
  EXPECT_TRUE(c->ClosedWithin(milliseconds(1000)));
  server_->Stop();  // twice is fine
}

TEST_F(HttpsServerTest, PrefixRoutesTakeEveryPathBelowThemAndExactRoutesWin) {
  StartServer();
  server_->Stop();
  config::TlsConfig tls{.cert_file = File("server.pem"), .key_file = File("server.key"),
                        .client_ca_file = File("ca.pem")};
  auto server = HttpsServer::Bind("127.0.0.1:0", tls, TestLimits());
  ASSERT_TRUE(server.ok());
  server_ = std::move(*server);
  server_->HandlePrefix("/", [](const Request& r) { return Response{.body = "root " + r.path}; });
  server_->HandlePrefix("/api/", [](const Request& r) { return Response{.body = "api " + r.path}; },
                        Route{.methods = {"POST"}});
  server_->Handle("/api/exact", [](const Request&) { return Response{.body = "exact"}; });
  server_->Start();
  EXPECT_NE(Curl("", "/anything/at/all").out.find("\r\n\r\nroot /anything/at/all"), std::string::npos);
  EXPECT_NE(Curl("-X POST", "/api/keys/k1/encrypt").out.find("\r\n\r\napi /api/keys/k1/encrypt"),
            std::string::npos);
  EXPECT_NE(Curl("", "/api/keys/k1/encrypt").out.find("405 Method Not Allowed"), std::string::npos);
  EXPECT_NE(Curl("", "/api/exact").out.find("\r\n\r\nexact"), std::string::npos);
}

TEST_F(HttpsServerTest, ARouteWithAHandlerDeadlineAnswersItsOwnErrorInTimeAndKeepsTheConnection) {
  config::TlsConfig tls{.cert_file = File("server.pem"), .key_file = File("server.key"),
                        .client_ca_file = File("ca.pem")};
  auto server = HttpsServer::Bind("127.0.0.1:0", tls, TestLimits());  // 1 worker, 2 queued
  ASSERT_TRUE(server.ok());
  server_ = std::move(*server);
  server_->Handle("/budget", [](const Request& r) {
    int ms = 0;
    if (!absl::SimpleAtoi(r.query, &ms) || ms > 10000) ms = 0;
    std::this_thread::sleep_for(milliseconds(ms));
    return Response{.body = "in time\n"};
  }, Route{.kind = HandlerKind::kBlocking,
           .handler_deadline_ms = 150,
           .deadline_response = Response{.status = 503, .content_type = "application/json",
                                         .body = R"({"errorName":"DependencyTimeoutException"})"},
           .busy_response = Response{.status = 429, .body = "throttled"}});
  server_->Start();
  auto c = Client();
  ASSERT_NE(c, nullptr);
  const auto started = Clock::now();
  ASSERT_TRUE(c->Send("GET /budget?1000 HTTP/1.1\r\nHost: localhost\r\n\r\n"));
  std::string late = c->ReadResponse();
  EXPECT_LT(Clock::now() - started, milliseconds(600));
  EXPECT_EQ(late.rfind("HTTP/1.1 503 Service Unavailable\r\n", 0), 0u) << late;
  EXPECT_NE(late.find("DependencyTimeoutException"), std::string::npos) << late;
  // The queue: the first request's handler still runs (1000 ms) and holds the only worker.
  auto second = Client();
  auto third = Client();
  ASSERT_NE(second, nullptr);
  ASSERT_NE(third, nullptr);
  ASSERT_TRUE(second->Send("GET /budget?0 HTTP/1.1\r\nHost: localhost\r\n\r\n"));
  std::this_thread::sleep_for(milliseconds(50));
  ASSERT_TRUE(third->Send("GET /budget?0 HTTP/1.1\r\nHost: localhost\r\n\r\n"));
  std::string busy = third->ReadResponse(milliseconds(500));
  EXPECT_EQ(busy.rfind("HTTP/1.1 429", 0), 0u) << busy;
  // The deadline answer left the first connection usable: a fast request on it is served.
  std::this_thread::sleep_for(milliseconds(1200));
  ASSERT_TRUE(c->Send("GET /budget?0 HTTP/1.1\r\nHost: localhost\r\n\r\n"));
  EXPECT_NE(c->ReadResponse().find("in time"), std::string::npos);
}

TEST_F(HttpsServerTest, AListenerMayRequireAClientCertificateWithAGivenCommonName) {
  config::TlsConfig tls{.cert_file = File("server.pem"), .key_file = File("server.key"),
                        .client_ca_file = File("ca.pem")};
  auto server = HttpsServer::Bind("127.0.0.1:0", tls, TestLimits(),
                                  ListenerOptions{.require_client_certificate = true,
                                                  .client_common_name = "billing"});
  ASSERT_TRUE(server.ok());
  server_ = std::move(*server);
  server_->Handle("/whoami", [](const Request& r) {
    return Response{.body = r.authenticated() ? r.client_certificate->common_name : "anonymous"};
  });
  server_->Start();
  auto anonymous = Curl("", "/whoami");
  EXPECT_EQ(anonymous.out.find("anonymous"), std::string::npos) << anonymous.out;
  EXPECT_NE(anonymous.exit_code, 0);
  auto known = Curl(absl::StrCat("--cert ", File("client.pem"), " --key ", File("client.key")), "/whoami");
  EXPECT_NE(known.out.find("\r\n\r\nbilling"), std::string::npos) << known.out;
  auto other_name = HttpsServer::Bind("127.0.0.1:0", tls, TestLimits(),
                                      ListenerOptions{.require_client_certificate = true,
                                                      .client_common_name = "cks.kms.eu-west-1.amazonaws.com"});
  ASSERT_TRUE(other_name.ok());
  server_->Stop();
  server_ = std::move(*other_name);
  server_->Handle("/whoami", [](const Request&) { return Response{.body = "served"}; });
  server_->Start();
  auto refused = Curl(absl::StrCat("--cert ", File("client.pem"), " --key ", File("client.key")), "/whoami");
  EXPECT_EQ(refused.out.find("served"), std::string::npos) << refused.out;
  // Without a client CA, no certificate is asked for and requiring one is a set-up error.
  config::TlsConfig no_ca = tls;
  no_ca.client_ca_file.clear();
  EXPECT_TRUE(HttpsServer::Bind("127.0.0.1:0", no_ca, TestLimits()).ok());
  EXPECT_FALSE(HttpsServer::Bind("127.0.0.1:0", no_ca, TestLimits(),
                                 ListenerOptions{.require_client_certificate = true})
                   .ok());
}

}  // namespace
}  // namespace kms::server::http
