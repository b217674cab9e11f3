#include "src/dev/dev_pki.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/buffer.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <memory>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "src/common/secret_file.h"
#include "src/common/ssl_ptr.h"
#include "src/common/strings.h"

namespace kms::dev {
namespace {

using BioPtr = SslUniquePtr<BIO>;
using BnPtr = SslUniquePtr<BIGNUM>;
using PkeyPtr = SslUniquePtr<EVP_PKEY>;
using X509Ptr = SslUniquePtr<X509>;
using ExtPtr = SslUniquePtr<X509_EXTENSION>;
using NamesPtr = SslUniquePtr<GENERAL_NAMES>;
using NamePtr = SslUniquePtr<GENERAL_NAME>;

constexpr int kMaxDays = 36500;
constexpr long kBackdateSeconds = 300;
constexpr size_t kMaxCommonNameBytes = 64;  // ub-common-name, RFC 5280
constexpr size_t kMaxPemFileBytes = 1 << 20;

// The OpenSSL error queue as text (and emptied), for INTERNAL errors.
absl::Status OpensslError(std::string_view what) {
  std::string detail;
  for (unsigned long e = ERR_get_error(); e != 0; e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof(buf));
    absl::StrAppend(&detail, detail.empty() ? "" : "; ", buf);
  }
  return absl::InternalError(
      absl::StrCat(Av(what), " failed", detail.empty() ? "" : ": ", detail));
}

absl::Status CheckDays(int days) {
  if (days < 1 || days > kMaxDays) {
    return absl::InvalidArgumentError(
        absl::StrCat("days must be between 1 and ", kMaxDays, ", got ", days));
  }
  return absl::OkStatus();
}

absl::Status CheckCommonName(std::string_view cn) {
  if (cn.empty() || cn.size() > kMaxCommonNameBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("common name must be 1..", kMaxCommonNameBytes, " bytes"));
  }
  for (unsigned char ch : cn) {
    if (ch < 0x20 || ch == 0x7f) {
      return absl::InvalidArgumentError("common name has a control character");
    }
  }
  return absl::OkStatus();
}

// A DNS name (optionally "*.") of LDH labels.
absl::Status CheckDnsName(std::string_view name) {
  std::string_view rest = name;
  if (rest.starts_with("*.")) rest.remove_prefix(2);
  bool ok = !rest.empty() && rest.size() <= 253 && rest.front() != '.' && rest.back() != '.' &&
            rest.find("..") == std::string_view::npos;
  for (char ch : rest) {
    ok = ok && ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                (ch >= '0' && ch <= '9') || ch == '-' || ch == '.');
  }
  if (!ok) return absl::InvalidArgumentError(absl::StrCat("'", Av(name), "' is not a DNS name"));
  return absl::OkStatus();
}

absl::Status CheckSpiffeUri(std::string_view uri) {
  constexpr std::string_view kScheme = "spiffe://";
  bool ok = uri.starts_with(kScheme) && uri.size() > kScheme.size() && uri.size() <= 2048;
  for (unsigned char ch : uri) ok = ok && ch > 0x20 && ch < 0x7f;
  if (!ok) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", Av(uri), "' is not a SPIFFE id (spiffe://trust-domain/path)"));
  }
  return absl::OkStatus();
}

absl::StatusOr<PkeyPtr> GenerateP256Key() {
  PkeyPtr key(EVP_EC_gen("P-256"));
  if (!key) return OpensslError("P-256 key generation");
  return key;
}

absl::StatusOr<std::string> CertToPem(X509* cert) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_X509(bio.get(), cert) != 1) return OpensslError("PEM_write_bio_X509");
  BUF_MEM* mem = nullptr;
  BIO_get_mem_ptr(bio.get(), &mem);
  return std::string(mem->data, mem->length);
}

absl::StatusOr<SecretBytes> KeyToPem(EVP_PKEY* key) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr) != 1) {
    return OpensslError("PEM_write_bio_PrivateKey");
  }
  BUF_MEM* mem = nullptr;
  BIO_get_mem_ptr(bio.get(), &mem);
  SecretBytes pem =
      SecretBytes::CopyOf(std::span<const uint8_t>(reinterpret_cast<uint8_t*>(mem->data),
                                                   mem->length));
  // The BIO's buffer held the key too: wipe it before it goes back to the heap.
  OPENSSL_cleanse(mem->data, mem->max);
  return pem;
}

// Never prompts on a terminal for an encrypted key: there is no passphrase.
int NoPassphrase(char*, int, int, void*) { return 0; }

absl::StatusOr<X509Ptr> ParseCert(std::string_view pem) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (!bio) return OpensslError("BIO_new_mem_buf");
  X509Ptr cert(PEM_read_bio_X509(bio.get(), nullptr, NoPassphrase, nullptr));
  if (!cert) {
    ERR_clear_error();
    return absl::InvalidArgumentError("not a PEM certificate");
  }
  return cert;
}

absl::StatusOr<PkeyPtr> ParseKey(const SecretBytes& pem) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (!bio) return OpensslError("BIO_new_mem_buf");
  PkeyPtr key(PEM_read_bio_PrivateKey(bio.get(), nullptr, NoPassphrase, nullptr));
  if (!key) {
    ERR_clear_error();
    return absl::InvalidArgumentError("not an unencrypted PEM private key");
  }
  return key;
}

// The CA's certificate and key, checked to belong together and to be a CA.
struct Issuer {
  X509Ptr cert;
  PkeyPtr key;
};

absl::StatusOr<Issuer> ParseIssuer(const IssuedCert& ca) {
  Issuer issuer;
  KMS_ASSIGN_OR_RETURN(issuer.cert, ParseCert(ca.cert_pem));
  KMS_ASSIGN_OR_RETURN(issuer.key, ParseKey(ca.key_pem));
  if (X509_check_private_key(issuer.cert.get(), issuer.key.get()) != 1) {
    ERR_clear_error();
    return absl::InvalidArgumentError("CA key does not match the CA certificate");
  }
  if (X509_check_ca(issuer.cert.get()) != 1) {
    return absl::InvalidArgumentError("the issuer certificate is not a CA");
  }
  return issuer;
}

absl::Status AddExtension(X509* cert, X509V3_CTX* ctx, int nid, const char* value) {
  ExtPtr ext(X509V3_EXT_conf_nid(nullptr, ctx, nid, value));
  if (!ext || X509_add_ext(cert, ext.get(), -1) != 1) {
    return OpensslError(absl::StrCat("extension ", OBJ_nid2sn(nid)));
  }
  return absl::OkStatus();
}

absl::Status AddSubjectAltNames(X509* cert, const std::vector<std::string>& dns_names,
                                const std::vector<std::string>& ips, std::string_view uri,
                                const std::vector<std::string>& more_uris = {}) {
  if (dns_names.empty() && ips.empty() && uri.empty() && more_uris.empty()) {
    return absl::OkStatus();  // no subjectAltName at all (test certificates only)
  }
  NamesPtr names(sk_GENERAL_NAME_new_null());
  if (!names) return OpensslError("sk_GENERAL_NAME_new_null");
  auto push_ia5 = [&](int type, std::string_view value) -> absl::Status {
    NamePtr name(GENERAL_NAME_new());
    ASN1_IA5STRING* str = ASN1_IA5STRING_new();
    if (!name || !str || ASN1_STRING_set(str, value.data(), static_cast<int>(value.size())) != 1) {
      ASN1_IA5STRING_free(str);
      return OpensslError("subjectAltName");
    }
    GENERAL_NAME_set0_value(name.get(), type, str);
    if (sk_GENERAL_NAME_push(names.get(), name.get()) == 0) return OpensslError("subjectAltName");
    name.release();  // owned by `names`
    return absl::OkStatus();
  };
  for (const std::string& dns : dns_names) KMS_RETURN_IF_ERROR(push_ia5(GEN_DNS, dns));
  for (const std::string& ip : ips) {
    ASN1_OCTET_STRING* octets = a2i_IPADDRESS(ip.c_str());
    if (octets == nullptr) {
      ERR_clear_error();
      return absl::InvalidArgumentError(absl::StrCat("'", ip, "' is not an IP address"));
    }
    NamePtr name(GENERAL_NAME_new());
    if (!name) {
      ASN1_OCTET_STRING_free(octets);
      return OpensslError("subjectAltName");
    }
    GENERAL_NAME_set0_value(name.get(), GEN_IPADD, octets);
    if (sk_GENERAL_NAME_push(names.get(), name.get()) == 0) return OpensslError("subjectAltName");
    name.release();
  }
  if (!uri.empty()) KMS_RETURN_IF_ERROR(push_ia5(GEN_URI, uri));
  for (const std::string& more : more_uris) KMS_RETURN_IF_ERROR(push_ia5(GEN_URI, more));
  if (X509_add1_ext_i2d(cert, NID_subject_alt_name, names.get(), 0, X509V3_ADD_DEFAULT) != 1) {
    return OpensslError("subjectAltName");
  }
  return absl::OkStatus();
}

absl::Status SetRandomSerial(X509* cert) {
  uint8_t bytes[16];
  BnPtr bn;
  do {
    if (RAND_bytes(bytes, sizeof(bytes)) != 1) return OpensslError("RAND_bytes");
    bn.reset(BN_bin2bn(bytes, sizeof(bytes), nullptr));
    if (!bn) return OpensslError("BN_bin2bn");
  } while (BN_is_zero(bn.get()));
  if (BN_to_ASN1_INTEGER(bn.get(), X509_get_serialNumber(cert)) == nullptr) {
    return OpensslError("serial number");
  }
  return absl::OkStatus();
}

enum class Kind { kCa, kServer, kClient };

struct Subject {
  std::string_view common_name;
  std::vector<std::string> dns_names;
  std::vector<std::string> ips;
  std::string_view uri;
  // Test certificates (IssueTestClientCert): more URI SANs, and the validity as offsets
  // from now in seconds when set (else -kBackdateSeconds .. days).
  std::vector<std::string> more_uris;
  bool explicit_validity = false;
  int64_t not_before_offset = 0;
  int64_t not_after_offset = 0;
};

// Builds and signs a certificate for a fresh key. `issuer` is null for the self-signed CA.
absl::StatusOr<IssuedCert> Issue(Kind kind, const Subject& subject, const Issuer* issuer,
                                 int days) {
  KMS_ASSIGN_OR_RETURN(PkeyPtr key, GenerateP256Key());
  X509Ptr cert(X509_new());
  if (!cert) return OpensslError("X509_new");
  if (X509_set_version(cert.get(), X509_VERSION_3) != 1) return OpensslError("X509_set_version");
  KMS_RETURN_IF_ERROR(SetRandomSerial(cert.get()));
  const long not_before =
      subject.explicit_validity ? static_cast<long>(subject.not_before_offset) : -kBackdateSeconds;
  const long not_after = subject.explicit_validity ? static_cast<long>(subject.not_after_offset)
                                                   : static_cast<long>(days) * 86400;
  if (X509_gmtime_adj(X509_getm_notBefore(cert.get()), not_before) == nullptr ||
      X509_gmtime_adj(X509_getm_notAfter(cert.get()), not_after) == nullptr) {
    return OpensslError("validity");
  }
  X509_NAME* name = X509_get_subject_name(cert.get());
  if (X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                                 reinterpret_cast<const unsigned char*>(subject.common_name.data()),
                                 static_cast<int>(subject.common_name.size()), -1, 0) != 1) {
    return OpensslError("subject name");
  }
  X509* issuer_cert = issuer != nullptr ? issuer->cert.get() : cert.get();
  EVP_PKEY* signing_key = issuer != nullptr ? issuer->key.get() : key.get();
  if (X509_set_issuer_name(cert.get(), X509_get_subject_name(issuer_cert)) != 1 ||
      X509_set_pubkey(cert.get(), key.get()) != 1) {
    return OpensslError("issuer name / public key");
  }

  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, issuer_cert, cert.get(), nullptr, nullptr, 0);
  if (kind == Kind::kCa) {
    KMS_RETURN_IF_ERROR(AddExtension(cert.get(), &ctx, NID_basic_constraints, "critical,CA:TRUE"));
    KMS_RETURN_IF_ERROR(
        AddExtension(cert.get(), &ctx, NID_key_usage, "critical,keyCertSign,cRLSign"));
  } else {
    KMS_RETURN_IF_ERROR(
        AddExtension(cert.get(), &ctx, NID_basic_constraints, "critical,CA:FALSE"));
    KMS_RETURN_IF_ERROR(AddExtension(cert.get(), &ctx, NID_key_usage, "critical,digitalSignature"));
    KMS_RETURN_IF_ERROR(AddExtension(cert.get(), &ctx, NID_ext_key_usage,
                                     kind == Kind::kServer ? "serverAuth" : "clientAuth"));
    KMS_RETURN_IF_ERROR(
        AddSubjectAltNames(cert.get(), subject.dns_names, subject.ips, subject.uri,
                           subject.more_uris));
  }
  // The subject key identifier first: for the self-signed CA the authority key
  // identifier is read from it.
  KMS_RETURN_IF_ERROR(AddExtension(cert.get(), &ctx, NID_subject_key_identifier, "hash"));
  KMS_RETURN_IF_ERROR(
      AddExtension(cert.get(), &ctx, NID_authority_key_identifier, "keyid:always"));

  if (X509_sign(cert.get(), signing_key, EVP_sha256()) <= 0) return OpensslError("X509_sign");

  IssuedCert issued;
  KMS_ASSIGN_OR_RETURN(issued.cert_pem, CertToPem(cert.get()));
  KMS_ASSIGN_OR_RETURN(issued.key_pem, KeyToPem(key.get()));
  return issued;
}

std::string ErrnoMessage(std::string_view what, const std::string& path, int err) {
  return absl::StrCat(Av(what), " ", path, ": ", std::strerror(err));
}

absl::Status FileError(std::string_view what, const std::string& path, int err) {
  std::string msg = ErrnoMessage(what, path, err);
  return err == ENOENT ? absl::NotFoundError(msg) : absl::InternalError(msg);
}

}  // namespace

absl::StatusOr<IssuedCert> CreateCa(std::string_view common_name, int days) {
  KMS_RETURN_IF_ERROR(CheckCommonName(common_name));
  KMS_RETURN_IF_ERROR(CheckDays(days));
  return Issue(Kind::kCa, Subject{.common_name = common_name}, nullptr, days);
}

absl::StatusOr<IssuedCert> IssueServerCert(const IssuedCert& ca,
                                           std::vector<std::string> dns_names,
                                           std::vector<std::string> ips, int days) {
  if (dns_names.empty()) {
    return absl::InvalidArgumentError("a server certificate needs at least one DNS name");
  }
  for (const std::string& dns : dns_names) KMS_RETURN_IF_ERROR(CheckDnsName(dns));
  KMS_RETURN_IF_ERROR(CheckCommonName(dns_names.front()));
  KMS_RETURN_IF_ERROR(CheckDays(days));
  KMS_ASSIGN_OR_RETURN(Issuer issuer, ParseIssuer(ca));
  Subject subject{.dns_names = std::move(dns_names), .ips = std::move(ips)};
  subject.common_name = subject.dns_names.front();
  return Issue(Kind::kServer, subject, &issuer, days);
}

absl::StatusOr<IssuedCert> IssueTestClientCert(const IssuedCert& ca, const TestClientCert& spec) {
  if (spec.not_after_offset_seconds <= spec.not_before_offset_seconds) {
    return absl::InvalidArgumentError("not_after must be after not_before");
  }
  KMS_ASSIGN_OR_RETURN(Issuer issuer, ParseIssuer(ca));
  return Issue(Kind::kClient,
               Subject{.common_name = spec.common_name,
                       .more_uris = spec.uri_sans,
                       .explicit_validity = true,
                       .not_before_offset = spec.not_before_offset_seconds,
                       .not_after_offset = spec.not_after_offset_seconds},
               &issuer, 1);
}

absl::StatusOr<IssuedCert> IssueClientCert(const IssuedCert& ca, std::string_view common_name,
                                           std::string_view spiffe_uri, int days) {
  KMS_RETURN_IF_ERROR(CheckCommonName(common_name));
  KMS_RETURN_IF_ERROR(CheckSpiffeUri(spiffe_uri));
  KMS_RETURN_IF_ERROR(CheckDays(days));
  KMS_ASSIGN_OR_RETURN(Issuer issuer, ParseIssuer(ca));
  return Issue(Kind::kClient, Subject{.common_name = common_name, .uri = spiffe_uri}, &issuer,
               days);
}

absl::Status WriteFileAtomic(const std::string& path, std::span<const uint8_t> data,
                             mode_t mode) {
  std::filesystem::path target(path);
  std::string dir = target.parent_path().empty() ? "." : target.parent_path().string();

  uint8_t nonce[8];
  if (RAND_bytes(nonce, sizeof(nonce)) != 1) return OpensslError("RAND_bytes");
  const std::string tmp = absl::StrCat(
      path, ".tmp-",
      absl::BytesToHexString(absl::string_view(reinterpret_cast<const char*>(nonce),
                                               sizeof(nonce))));

  // Created with `mode` (never wider), exclusively, not through a symlink.
  int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode);
  if (fd < 0) return FileError("cannot create", tmp, errno);
  auto fail = [&](std::string_view what, int err) {
    close(fd);
    unlink(tmp.c_str());
    return FileError(what, tmp, err);
  };
  // The umask may have narrowed the mode; restore exactly `mode` (never wider).
  if (fchmod(fd, mode) != 0) return fail("cannot set the mode of", errno);
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = write(fd, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return fail("cannot write", errno);
    done += static_cast<size_t>(n);
  }
  if (fsync(fd) != 0) return fail("cannot fsync", errno);
  if (close(fd) != 0) {
    int err = errno;
    unlink(tmp.c_str());
    return FileError("cannot close", tmp, err);
  }
  if (rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    unlink(tmp.c_str());
    return FileError("cannot rename to", path, err);
  }
  // Make the rename itself durable.
  int dfd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) return FileError("cannot open directory", dir, errno);
  int rc = fsync(dfd);
  int err = errno;
  close(dfd);
  if (rc != 0) return FileError("cannot fsync directory", dir, err);
  return absl::OkStatus();
}

absl::Status WriteFileAtomic(const std::string& path, std::string_view data, mode_t mode) {
  return WriteFileAtomic(
      path, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(data.data()), data.size()),
      mode);
}

absl::Status WriteIssued(const IssuedCert& issued, const std::string& cert_path,
                         const std::string& key_path) {
  KMS_RETURN_IF_ERROR(WriteFileAtomic(key_path, issued.key_pem.span(), 0600));
  return WriteFileAtomic(cert_path, std::string_view(issued.cert_pem), 0644);
}

absl::StatusOr<IssuedCert> LoadIssued(const std::string& cert_path, const std::string& key_path) {
  // Both through the secret reader: its size cap and regular-file check suit the
  // certificate too, and the bytes are taken as stored.
  KMS_ASSIGN_OR_RETURN(
      SecretBytes cert_bytes,
      ReadSecretFile(cert_path, "certificate", kMaxPemFileBytes, SecretFileTrim::kNone));
  IssuedCert issued;
  issued.cert_pem.assign(reinterpret_cast<const char*>(cert_bytes.data()), cert_bytes.size());
  KMS_ASSIGN_OR_RETURN(issued.key_pem, ReadSecretFile(key_path, "private key", kMaxPemFileBytes,
                                                      SecretFileTrim::kNone));

  absl::StatusOr<X509Ptr> cert = ParseCert(issued.cert_pem);
  if (!cert.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(cert_path, ": ", cert.status().message()));
  }
  absl::StatusOr<PkeyPtr> key = ParseKey(issued.key_pem);
  if (!key.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(key_path, ": ", key.status().message()));
  }
  if (X509_check_private_key(cert->get(), key->get()) != 1) {
    ERR_clear_error();
    return absl::InvalidArgumentError(
        absl::StrCat(key_path, ": the key does not belong to ", cert_path));
  }
  return issued;
}

}  // namespace kms::dev
