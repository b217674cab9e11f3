#include "src/dev/dev_pki.h"

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "src/common/ssl_ptr.h"

namespace kms::dev {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::UnorderedElementsAre;

using X509Ptr = SslUniquePtr<X509>;
using PkeyPtr = SslUniquePtr<EVP_PKEY>;
using BioPtr = SslUniquePtr<BIO>;
using StorePtr = SslUniquePtr<X509_STORE>;
using StoreCtxPtr = SslUniquePtr<X509_STORE_CTX>;
using NamesPtr = SslUniquePtr<GENERAL_NAMES>;

X509Ptr Cert(const IssuedCert& issued) {
  BioPtr bio(BIO_new_mem_buf(issued.cert_pem.data(), static_cast<int>(issued.cert_pem.size())));
  return X509Ptr(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
}

PkeyPtr Key(const IssuedCert& issued) {
  BioPtr bio(BIO_new_mem_buf(issued.key_pem.data(), static_cast<int>(issued.key_pem.size())));
  return PkeyPtr(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
}

// X509_verify_cert of `leaf` against `ca` as the only trust anchor, for `purpose`.
bool Verifies(const IssuedCert& leaf, const IssuedCert& ca, int purpose) {
  X509Ptr leaf_cert = Cert(leaf);
  X509Ptr ca_cert = Cert(ca);
  StorePtr store(X509_STORE_new());
  X509_STORE_add_cert(store.get(), ca_cert.get());
  StoreCtxPtr ctx(X509_STORE_CTX_new());
  X509_STORE_CTX_init(ctx.get(), store.get(), leaf_cert.get(), nullptr);
  X509_STORE_CTX_set_purpose(ctx.get(), purpose);
  return X509_verify_cert(ctx.get()) == 1;
}

std::string CommonName(X509* cert) {
  char buf[256] = {};
  X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, buf, sizeof(buf));
  return buf;
}

// SANs as "DNS:x", "IP:1.2.3.4" (as OpenSSL prints them), "URI:x".
std::vector<std::string> SubjectAltNames(X509* cert) {
  std::vector<std::string> out;
  NamesPtr names(static_cast<GENERAL_NAMES*>(
      X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr)));
  if (!names) return out;
  for (int i = 0; i < sk_GENERAL_NAME_num(names.get()); ++i) {
    GENERAL_NAME* gn = sk_GENERAL_NAME_value(names.get(), i);
    if (gn->type == GEN_DNS || gn->type == GEN_URI) {
      const ASN1_IA5STRING* s = gn->type == GEN_DNS ? gn->d.dNSName : gn->d.uniformResourceIdentifier;
      out.push_back((gn->type == GEN_DNS ? "DNS:" : "URI:") +
                    std::string(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
                                ASN1_STRING_length(s)));
    } else if (gn->type == GEN_IPADD) {
      BioPtr bio(BIO_new(BIO_s_mem()));
      GENERAL_NAME_print(bio.get(), gn);
      char* data = nullptr;
      long len = BIO_get_mem_data(bio.get(), &data);
      std::string printed(data, len);  // "IP Address:1.2.3.4"
      out.push_back("IP:" + printed.substr(printed.find(':') + 1));
    }
  }
  return out;
}

class DevPkiTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto ca = CreateCa("kmsd dev CA", 30);
    ASSERT_TRUE(ca.ok()) << ca.status();
    ca_ = new IssuedCert(std::move(*ca));
  }
  static void TearDownTestSuite() {
    delete ca_;
    ca_ = nullptr;
  }

  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "kms_dev_pki_test.XXXXXX").string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { fs::remove_all(dir_); }

  static IssuedCert Server() {
    auto s = IssueServerCert(*ca_, {"localhost", "kms.dev.internal"}, {"127.0.0.1", "::1"}, 30);
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? std::move(*s) : IssuedCert{};
  }
  static IssuedCert Client() {
    auto c = IssueClientCert(*ca_, "billing", "spiffe://kmsd.dev/billing", 30);
    EXPECT_TRUE(c.ok()) << c.status();
    return c.ok() ? std::move(*c) : IssuedCert{};
  }

  static IssuedCert* ca_;
  fs::path dir_;
};
IssuedCert* DevPkiTest::ca_ = nullptr;

TEST_F(DevPkiTest, CaIsASelfSignedCaWithCriticalBasicConstraintsAndCertSignUsage) {
  X509Ptr ca = Cert(*ca_);
  ASSERT_NE(ca, nullptr);
  EXPECT_EQ(X509_check_ca(ca.get()), 1);
  EXPECT_TRUE(X509_get_extension_flags(ca.get()) & EXFLAG_SS);
  int crit = -1;
  BASIC_CONSTRAINTS* bc =
      static_cast<BASIC_CONSTRAINTS*>(X509_get_ext_d2i(ca.get(), NID_basic_constraints, &crit, nullptr));
  ASSERT_NE(bc, nullptr);
  EXPECT_TRUE(bc->ca);
  EXPECT_EQ(crit, 1);
  BASIC_CONSTRAINTS_free(bc);
  EXPECT_EQ(X509_get_key_usage(ca.get()), static_cast<uint32_t>(KU_KEY_CERT_SIGN | KU_CRL_SIGN));
  EXPECT_EQ(CommonName(ca.get()), "kmsd dev CA");
  EXPECT_TRUE(Verifies(*ca_, *ca_, X509_PURPOSE_ANY));
}

TEST_F(DevPkiTest, ServerAndClientCertsVerifyAgainstTheCa) {
  IssuedCert server = Server();
  IssuedCert client = Client();
  EXPECT_TRUE(Verifies(server, *ca_, X509_PURPOSE_SSL_SERVER));
  EXPECT_TRUE(Verifies(client, *ca_, X509_PURPOSE_SSL_CLIENT));
}

TEST_F(DevPkiTest, EachCertificateIsUsableOnlyForItsSide) {
  EXPECT_FALSE(Verifies(Server(), *ca_, X509_PURPOSE_SSL_CLIENT));
  EXPECT_FALSE(Verifies(Client(), *ca_, X509_PURPOSE_SSL_SERVER));
}

TEST_F(DevPkiTest, ServerCertHasTheDnsAndIpSansAndTheFirstDnsNameAsCn) {
  IssuedCert server = Server();
  X509Ptr cert = Cert(server);
  ASSERT_NE(cert, nullptr);
  EXPECT_THAT(SubjectAltNames(cert.get()),
              UnorderedElementsAre("DNS:localhost", "DNS:kms.dev.internal", "IP:127.0.0.1",
                                   "IP:0:0:0:0:0:0:0:1"));
  EXPECT_EQ(X509_check_host(cert.get(), "kms.dev.internal", 0, 0, nullptr), 1);
  EXPECT_EQ(X509_check_ip_asc(cert.get(), "::1", 0), 1);
  EXPECT_EQ(CommonName(cert.get()), "localhost");
  EXPECT_TRUE(X509_get_extended_key_usage(cert.get()) & XKU_SSL_SERVER);
  EXPECT_FALSE(X509_get_extended_key_usage(cert.get()) & XKU_SSL_CLIENT);
  EXPECT_EQ(X509_check_ca(cert.get()), 0);
  EXPECT_TRUE(X509_get_key_usage(cert.get()) & KU_DIGITAL_SIGNATURE);
}

TEST_F(DevPkiTest, ClientCertHasTheSpiffeUriSanAndClientAuth) {
  IssuedCert client = Client();
  X509Ptr cert = Cert(client);
  ASSERT_NE(cert, nullptr);
  EXPECT_THAT(SubjectAltNames(cert.get()), UnorderedElementsAre("URI:spiffe://kmsd.dev/billing"));
  EXPECT_EQ(CommonName(cert.get()), "billing");
  EXPECT_EQ(X509_get_extended_key_usage(cert.get()), static_cast<uint32_t>(XKU_SSL_CLIENT));
  EXPECT_EQ(X509_check_ca(cert.get()), 0);
}

TEST_F(DevPkiTest, CertsUseP256Sha256RandomSerialsAndKeyIdentifiers) {
  X509Ptr ca = Cert(*ca_);
  X509Ptr a = Cert(Client());
  X509Ptr b = Cert(Client());
  for (X509* cert : {ca.get(), a.get(), b.get()}) {
    EXPECT_EQ(X509_get_signature_nid(cert), NID_ecdsa_with_SHA256);
    EXPECT_EQ(EVP_PKEY_get_bits(X509_get0_pubkey(cert)), 256);
    EXPECT_LE(ASN1_STRING_length(X509_get0_serialNumber(cert)), 17);
    ASSERT_NE(X509_get0_subject_key_id(cert), nullptr);
    ASSERT_NE(X509_get0_authority_key_id(cert), nullptr);
    EXPECT_EQ(ASN1_OCTET_STRING_cmp(X509_get0_authority_key_id(cert),
                                    X509_get0_subject_key_id(ca.get())),
              0);
  }
  EXPECT_NE(ASN1_INTEGER_cmp(X509_get0_serialNumber(a.get()), X509_get0_serialNumber(b.get())), 0);
}

TEST_F(DevPkiTest, PrivateKeyIsAPemKeyMatchingItsCertificate) {
  IssuedCert client = Client();
  std::string_view pem(reinterpret_cast<const char*>(client.key_pem.data()),
                       client.key_pem.size());
  EXPECT_TRUE(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
  PkeyPtr key = Key(client);
  X509Ptr cert = Cert(client);
  ASSERT_NE(key, nullptr);
  EXPECT_EQ(X509_check_private_key(cert.get(), key.get()), 1);
}

TEST_F(DevPkiTest, ACertFromAnotherCaDoesNotVerify) {
  auto other_ca = CreateCa("other CA", 30);
  ASSERT_TRUE(other_ca.ok()) << other_ca.status();
  auto stranger = IssueClientCert(*other_ca, "mallory", "spiffe://kmsd.dev/billing", 30);
  ASSERT_TRUE(stranger.ok()) << stranger.status();
  EXPECT_FALSE(Verifies(*stranger, *ca_, X509_PURPOSE_SSL_CLIENT));
  EXPECT_TRUE(Verifies(*stranger, *other_ca, X509_PURPOSE_SSL_CLIENT));
}

TEST_F(DevPkiTest, ALeafCannotIssueCertificates) {
  auto issued = IssueClientCert(Server(), "x", "spiffe://kmsd.dev/x", 30);
  ASSERT_FALSE(issued.ok());
  EXPECT_THAT(std::string(issued.status().message()), HasSubstr("not a CA"));
}

TEST_F(DevPkiTest, BadInputsAreInvalidArgument) {
  EXPECT_EQ(CreateCa("", 30).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CreateCa("ca", 0).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CreateCa("ca", 36501).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(IssueServerCert(*ca_, {}, {"127.0.0.1"}, 30).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(IssueServerCert(*ca_, {"bad name"}, {}, 30).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(IssueServerCert(*ca_, {"localhost"}, {"300.1.1.1"}, 30).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(IssueClientCert(*ca_, "x", "https://kmsd.dev/x", 30).status().code(),
            absl::StatusCode::kInvalidArgument);
  IssuedCert garbage{"not a cert", SecretBytes::CopyOf(std::string_view("not a key"))};
  EXPECT_EQ(IssueClientCert(garbage, "x", "spiffe://kmsd.dev/x", 30).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(DevPkiTest, ACommaInASanValueCannotAddAnotherName) {
  auto client = IssueClientCert(*ca_, "x", "spiffe://kmsd.dev/a,URI:spiffe://kmsd.dev/ops", 30);
  ASSERT_TRUE(client.ok()) << client.status();
  X509Ptr cert = Cert(*client);
  EXPECT_THAT(SubjectAltNames(cert.get()),
              UnorderedElementsAre("URI:spiffe://kmsd.dev/a,URI:spiffe://kmsd.dev/ops"));
}

TEST_F(DevPkiTest, WriteFileAtomicCreatesA0600FileWithTheData) {
  const std::string path = (dir_ / "key.pem").string();
  ASSERT_TRUE(WriteFileAtomic(path, std::string_view("secret\n"), 0600).ok());
  struct stat st;
  ASSERT_EQ(stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  EXPECT_EQ(text.str(), "secret\n");
}

TEST_F(DevPkiTest, WriteFileAtomicReplacesAnExistingFileAndLeavesNoTemporaries) {
  const std::string path = (dir_ / "cert.pem").string();
  ASSERT_TRUE(WriteFileAtomic(path, std::string_view("one"), 0644).ok());
  ASSERT_TRUE(WriteFileAtomic(path, std::string_view("two"), 0600).ok());
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  EXPECT_EQ(text.str(), "two");
  struct stat st;
  ASSERT_EQ(stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  int files = 0;
  for ([[maybe_unused]] const auto& entry : fs::directory_iterator(dir_)) ++files;
  EXPECT_EQ(files, 1);
}

TEST_F(DevPkiTest, WriteFileAtomicIntoAMissingDirectoryFails) {
  absl::Status s = WriteFileAtomic((dir_ / "no/such/dir/f").string(), std::string_view("x"), 0600);
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound) << s;
}

TEST_F(DevPkiTest, LoadIssuedRoundTripsAndTheLoadedCaCanIssue) {
  const std::string cert_path = (dir_ / "ca.pem").string();
  const std::string key_path = (dir_ / "ca.key").string();
  ASSERT_TRUE(WriteIssued(*ca_, cert_path, key_path).ok());
  struct stat st;
  ASSERT_EQ(stat(key_path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  ASSERT_EQ(stat(cert_path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0644u);

  absl::StatusOr<IssuedCert> loaded = LoadIssued(cert_path, key_path);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->cert_pem, ca_->cert_pem);
  EXPECT_TRUE(loaded->key_pem.Equals(ca_->key_pem));

  auto client = IssueClientCert(*loaded, "later", "spiffe://kmsd.dev/later", 1);
  ASSERT_TRUE(client.ok()) << client.status();
  EXPECT_TRUE(Verifies(*client, *ca_, X509_PURPOSE_SSL_CLIENT));
}

TEST_F(DevPkiTest, LoadIssuedRejectsAKeyOfAnotherCertificate) {
  IssuedCert client = Client();
  const std::string cert_path = (dir_ / "ca.pem").string();
  const std::string key_path = (dir_ / "client.key").string();
  ASSERT_TRUE(WriteFileAtomic(cert_path, std::string_view(ca_->cert_pem), 0644).ok());
  ASSERT_TRUE(WriteFileAtomic(key_path, client.key_pem.span(), 0600).ok());
  absl::StatusOr<IssuedCert> loaded = LoadIssued(cert_path, key_path);
  ASSERT_FALSE(loaded.ok());
  EXPECT_THAT(std::string(loaded.status().message()), HasSubstr("does not belong"));
}

TEST_F(DevPkiTest, LoadIssuedOfAMissingFileIsNotFound) {
  EXPECT_EQ(LoadIssued((dir_ / "a").string(), (dir_ / "b").string()).status().code(),
            absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace kms::dev
