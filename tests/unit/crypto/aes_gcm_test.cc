#include "src/crypto/aes_gcm.h"

#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace kms::crypto {
namespace {

std::vector<uint8_t> Hex(std::string_view hex) {
  std::vector<uint8_t> out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) {
    out.push_back(static_cast<uint8_t>(std::stoi(std::string(hex.substr(i, 2)), nullptr, 16)));
  }
  return out;
}

std::unique_ptr<AesGcmKey> MakeKey(std::string_view hex) {
  auto key = AesGcmKey::Create(SecretBytes::CopyOf(Hex(hex)));
  EXPECT_TRUE(key.ok()) << key.status();
  return key.ok() ? std::move(*key) : nullptr;
}

// A published AES-256-GCM test case, 96-bit IV.
struct GcmVector {
  std::string name;
  std::string key;
  std::string iv;
  std::string plaintext;
  std::string aad;
  std::string ciphertext;
  std::string tag;
};

void PrintTo(const GcmVector& v, std::ostream* os) { *os << v.name; }

class GcmSpecVectorTest : public testing::TestWithParam<GcmVector> {};

TEST_P(GcmSpecVectorTest, EncryptGivesThePublishedCiphertextAndTag) {
  const GcmVector& v = GetParam();
  auto key = MakeKey(v.key);
  ASSERT_NE(key, nullptr);
  const auto pt = Hex(v.plaintext);
  std::vector<uint8_t> out(pt.size() + kAesGcmTagSize);
  ASSERT_TRUE(key->Encrypt(Hex(v.iv), pt, Hex(v.aad), out).ok());
  auto expected = Hex(v.ciphertext);
  const auto tag = Hex(v.tag);
  expected.insert(expected.end(), tag.begin(), tag.end());
  EXPECT_EQ(out, expected);
}

TEST_P(GcmSpecVectorTest, DecryptRecoversThePublishedPlaintext) {
  const GcmVector& v = GetParam();
  auto key = MakeKey(v.key);
  ASSERT_NE(key, nullptr);
  auto in = Hex(v.ciphertext);
  const auto tag = Hex(v.tag);
  in.insert(in.end(), tag.begin(), tag.end());
  std::vector<uint8_t> out(in.size() - kAesGcmTagSize);
  ASSERT_TRUE(key->Decrypt(Hex(v.iv), in, Hex(v.aad), out).ok());
  EXPECT_EQ(out, Hex(v.plaintext));
}

TEST_P(GcmSpecVectorTest, DecryptWithAModifiedTagFailsWithDataLossAndWipesTheOutput) {
  const GcmVector& v = GetParam();
  auto key = MakeKey(v.key);
  ASSERT_NE(key, nullptr);
  auto in = Hex(v.ciphertext);
  const auto tag = Hex(v.tag);
  in.insert(in.end(), tag.begin(), tag.end());
  in.back() ^= 0x01;
  std::vector<uint8_t> out(in.size() - kAesGcmTagSize, 0xAA);
  const absl::Status status = key->Decrypt(Hex(v.iv), in, Hex(v.aad), out);
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(status.message(), "decryption failed");
  EXPECT_EQ(out, std::vector<uint8_t>(out.size(), 0));
}

TEST_P(GcmSpecVectorTest, DecryptWithOtherAadFailsWithDataLoss) {
  const GcmVector& v = GetParam();
  auto key = MakeKey(v.key);
  ASSERT_NE(key, nullptr);
  auto in = Hex(v.ciphertext);
  const auto tag = Hex(v.tag);
  in.insert(in.end(), tag.begin(), tag.end());
  auto aad = Hex(v.aad);
  aad.push_back(0x00);
  std::vector<uint8_t> out(in.size() - kAesGcmTagSize);
  EXPECT_EQ(key->Decrypt(Hex(v.iv), in, aad, out).code(), absl::StatusCode::kDataLoss);
}

// McGrew & Viega, "The Galois/Counter Mode of Operation (GCM)", test cases 13-16
// (AES-256, 96-bit IV). Cross-checked with Python's `cryptography` package.
constexpr char kKey15[] = "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308";
constexpr char kIv15[] = "cafebabefacedbaddecaf888";
constexpr char kPt15[] =
    "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
    "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255";
constexpr char kCt15[] =
    "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa"
    "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662898015ad";

INSTANTIATE_TEST_SUITE_P(
    McGrewViega, GcmSpecVectorTest,
    testing::Values(GcmVector{"TestCase13", std::string(64, '0'), std::string(24, '0'), "", "", "",
                              "530f8afbc74536b9a963b4f1c4cb738b"},
                    GcmVector{"TestCase14", std::string(64, '0'), std::string(24, '0'),
                              std::string(32, '0'), "", "cea7403d4d606b6e074ec5d3baf39d18",
                              "d0d1c8a799996bf0265b98b5d48ab919"},
                    GcmVector{"TestCase15", kKey15, kIv15, kPt15, "", kCt15,
                              "b094dac5d93471bdec1a502270e3cc6c"},
                    GcmVector{"TestCase16", kKey15, kIv15, std::string(kPt15, 120),
                              "feedfacedeadbeeffeedfacedeadbeefabaddad2", std::string(kCt15, 120),
                              "76fc6ece0f4e1768cddf8853bb2d551b"}),
    [](const testing::TestParamInfo<GcmVector>& info) { return info.param.name; });

// Keys share each thread's EVP contexts and re-key them on a switch: interleaving keys
// on one thread, and a key made where a destroyed one lived (same address, maybe),
// must each use their own key bytes.
std::vector<uint8_t> Seal(const AesGcmKey& key, const std::vector<uint8_t>& nonce,
                          const std::vector<uint8_t>& pt) {
  std::vector<uint8_t> out(pt.size() + kAesGcmTagSize);
  EXPECT_TRUE(key.Encrypt(nonce, pt, {}, out).ok());
  return out;
}

TEST(AesGcmKeyTest, KeysInterleavedOnOneThreadEachUseTheirOwnBytes) {
  SecretBytes a(32), b(32);
  a.data()[0] = 1;
  b.data()[0] = 2;
  auto ka = AesGcmKey::Create(a).value();
  auto kb = AesGcmKey::Create(b).value();
  const std::vector<uint8_t> nonce(12, 7), pt = {1, 2, 3, 4};
  const auto ca = Seal(*ka, nonce, pt);
  const auto cb = Seal(*kb, nonce, pt);
  EXPECT_NE(ca, cb);
  EXPECT_EQ(Seal(*ka, nonce, pt), ca);  // back to a: re-keyed, same answer
  std::vector<uint8_t> out(pt.size());
  EXPECT_TRUE(kb->Decrypt(nonce, cb, {}, out).ok());
  EXPECT_EQ(out, pt);
  EXPECT_EQ(ka->Decrypt(nonce, cb, {}, out).code(), absl::StatusCode::kDataLoss);
  EXPECT_TRUE(ka->Decrypt(nonce, ca, {}, out).ok());
  EXPECT_EQ(out, pt);
}

TEST(AesGcmKeyTest, AKeyMadeAfterAnotherDiedDoesNotUseTheDeadKeysSchedule) {
  const std::vector<uint8_t> nonce(12, 7), pt = {9, 9};
  std::set<std::vector<uint8_t>> seen;
  for (uint8_t i = 0; i < 20; ++i) {
    SecretBytes bytes(32);
    bytes.data()[5] = i;
    auto key = AesGcmKey::Create(bytes).value();  // often at the same address as the last
    EXPECT_TRUE(seen.insert(Seal(*key, nonce, pt)).second) << "key " << int{i};
  }
}

TEST(AesGcmKeyTest, OneKeyOnManyThreadsAgrees) {
  SecretBytes bytes(32);
  bytes.data()[0] = 3;
  auto key = AesGcmKey::Create(bytes).value();
  const std::vector<uint8_t> nonce(12, 1), pt(100, 0x5a);
  const auto expected = Seal(*key, nonce, pt);
  std::vector<std::thread> threads;
  std::atomic<int> mismatches{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 200; ++i) {
        if (Seal(*key, nonce, pt) != expected) ++mismatches;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(mismatches.load(), 0);
}

TEST(AesGcmKeyTest, CreateRejectsKeysThatAreNot32Bytes) {
  for (size_t size : {0, 16, 24, 31, 33, 64}) {
    auto key = AesGcmKey::Create(SecretBytes(size));
    ASSERT_FALSE(key.ok()) << "size " << size;
    EXPECT_EQ(key.status().code(), absl::StatusCode::kInvalidArgument);
  }
}

TEST(AesGcmKeyTest, EncryptRejectsBadNonceAndOutputSizes) {
  auto key = MakeKey(kKey15);
  const std::vector<uint8_t> pt(10);
  std::vector<uint8_t> out(pt.size() + kAesGcmTagSize);
  EXPECT_EQ(key->Encrypt(std::vector<uint8_t>(16), pt, {}, out).code(),
            absl::StatusCode::kInvalidArgument);
  std::vector<uint8_t> short_out(pt.size() + kAesGcmTagSize - 1);
  EXPECT_EQ(key->Encrypt(std::vector<uint8_t>(12), pt, {}, short_out).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(AesGcmKeyTest, DecryptRejectsInputShorterThanATag) {
  auto key = MakeKey(kKey15);
  std::vector<uint8_t> out;
  EXPECT_EQ(key->Decrypt(std::vector<uint8_t>(12), std::vector<uint8_t>(15), {}, out).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(AesGcmKeyTest, AKeyStillGivesTheVectorAfterAFailedDecrypt) {
  // Contexts go back to the pool after a failure; the next call must not see its state.
  auto key = MakeKey(kKey15);
  const auto pt = Hex(kPt15);
  std::vector<uint8_t> junk(pt.size() + kAesGcmTagSize, 0x42);
  std::vector<uint8_t> out(pt.size());
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(key->Decrypt(Hex(kIv15), junk, {}, out).code(), absl::StatusCode::kDataLoss);
  }
  std::vector<uint8_t> ct(pt.size() + kAesGcmTagSize);
  ASSERT_TRUE(key->Encrypt(Hex(kIv15), pt, {}, ct).ok());
  EXPECT_EQ(std::vector<uint8_t>(ct.begin(), ct.begin() + pt.size()), Hex(kCt15));
  EXPECT_EQ(std::vector<uint8_t>(ct.begin() + pt.size(), ct.end()),
            Hex("b094dac5d93471bdec1a502270e3cc6c"));
}

TEST(AesGcmKeyTest, LargeMessagesRoundTrip) {
  auto key = MakeKey(kKey15);
  std::vector<uint8_t> pt(1 << 20);
  ASSERT_TRUE(RandomBytes(pt).ok());
  const std::vector<uint8_t> nonce(12, 7), aad = {1, 2, 3};
  std::vector<uint8_t> ct(pt.size() + kAesGcmTagSize), back(pt.size());
  ASSERT_TRUE(key->Encrypt(nonce, pt, aad, ct).ok());
  ASSERT_TRUE(key->Decrypt(nonce, ct, aad, back).ok());
  EXPECT_EQ(back, pt);
}

TEST(AesGcmKeyTest, ConcurrentCallsOnOneKeyAllSucceed) {
  auto key = MakeKey(kKey15);
  constexpr int kThreads = 8;
  std::vector<int> failures(kThreads, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::vector<uint8_t> nonce(12, static_cast<uint8_t>(t)), pt(100 + t, 0x5a);
      std::vector<uint8_t> ct(pt.size() + kAesGcmTagSize), back(pt.size());
      for (int i = 0; i < 2000; ++i) {
        nonce[0] = static_cast<uint8_t>(i);
        if (!key->Encrypt(nonce, pt, nonce, ct).ok() ||
            !key->Decrypt(nonce, ct, nonce, back).ok() || back != pt) {
          ++failures[t];
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures, std::vector<int>(kThreads, 0));
}

TEST(RandomTest, RandomBytesFillsTheBufferDifferentlyEachTime) {
  std::vector<uint8_t> a(32), b(32);
  ASSERT_TRUE(RandomBytes(a).ok());
  ASSERT_TRUE(RandomBytes(b).ok());
  EXPECT_NE(a, b);
  EXPECT_NE(a, std::vector<uint8_t>(32, 0));
  EXPECT_TRUE(RandomBytes({}).ok());
}

TEST(RandomTest, RandomSecretHasTheRequestedSize) {
  auto s = RandomSecret(kAesGcmKeySize);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->size(), kAesGcmKeySize);
  EXPECT_TRUE(AesGcmKey::Create(*s).ok());
}

}  // namespace
}  // namespace kms::crypto

namespace kms::crypto {
namespace {

TEST(NonceBytesTest, NoncesNeverRepeatAcrossBufferRefills) {
  std::set<std::string> seen;
  std::array<uint8_t, kAesGcmNonceSize> nonce{};
  for (int i = 0; i < 2000; ++i) {  // several 4 KiB refills
    ASSERT_TRUE(NonceBytes(nonce).ok());
    EXPECT_TRUE(seen.emplace(reinterpret_cast<const char*>(nonce.data()), nonce.size()).second);
  }
}

TEST(NonceBytesTest, AForkedChildDoesNotRepeatItsParentsNextNonce) {
  std::array<uint8_t, kAesGcmNonceSize> nonce{};
  ASSERT_TRUE(NonceBytes(nonce).ok());  // the parent's buffer is now filled
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    std::array<uint8_t, kAesGcmNonceSize> c{};
    _exit(NonceBytes(c).ok() && write(fds[1], c.data(), c.size()) == static_cast<ssize_t>(c.size()) ? 0 : 1);
  }
  std::array<uint8_t, kAesGcmNonceSize> from_child{};
  ASSERT_EQ(read(fds[0], from_child.data(), from_child.size()), static_cast<ssize_t>(from_child.size()));
  int status = 0;
  waitpid(child, &status, 0);
  close(fds[0]);
  close(fds[1]);
  ASSERT_TRUE(NonceBytes(nonce).ok());
  EXPECT_NE(nonce, from_child);
}

}  // namespace
}  // namespace kms::crypto
