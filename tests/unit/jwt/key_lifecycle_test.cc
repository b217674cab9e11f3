// The lifecycle table, pair by pair: every (state, event) pair either lands where
// DESIGN §5 says or is rejected.
#include "src/jwt/key_lifecycle.h"

#include <map>
#include <set>
#include <string>
#include <utility>

#include "gtest/gtest.h"

namespace kms::jwt {
namespace {

using S = KeyLifecycleState;
using E = KeyLifecycleEvent;

// Written out independently of the implementation's table.
const std::map<std::pair<S, E>, S>& Expected() {
  static const auto* expected = new std::map<std::pair<S, E>, S>{
      {{S::kLoading, E::kKeysLoaded}, S::kActive},
      {{S::kActive, E::kNextKeyActivated}, S::kDualActive},
      {{S::kActive, E::kRotationSucceeded}, S::kActive},
      {{S::kActive, E::kBackendDown}, S::kDegraded},
      {{S::kDualActive, E::kOverlapEnded}, S::kActive},
      {{S::kDualActive, E::kRotationSucceeded}, S::kDualActive},
      {{S::kDualActive, E::kBackendDown}, S::kDegraded},
      {{S::kDegraded, E::kBackendUp}, S::kActive},
      {{S::kDegraded, E::kMaxAgeExceeded}, S::kCritical},
      {{S::kCritical, E::kOperatorAck}, S::kActive},
      {{S::kCritical, E::kRotationSucceeded}, S::kActive},
  };
  return *expected;
}

class KeyLifecyclePairTest : public ::testing::TestWithParam<std::pair<S, E>> {};

TEST_P(KeyLifecyclePairTest, LandsWhereTheDesignSaysOrIsRejected) {
  const auto [state, event] = GetParam();
  const std::optional<S> next = Next(state, event);
  auto it = Expected().find({state, event});
  if (it == Expected().end()) {
    EXPECT_FALSE(next.has_value()) << "unexpected transition to "
                                   << KeyLifecycleStateName(*next);
  } else {
    ASSERT_TRUE(next.has_value()) << "transition missing";
    EXPECT_EQ(*next, it->second) << KeyLifecycleStateName(*next);
  }
}

std::vector<std::pair<S, E>> AllPairs() {
  std::vector<std::pair<S, E>> pairs;
  for (S s : kAllKeyLifecycleStates) {
    for (E e : kAllKeyLifecycleEvents) pairs.emplace_back(s, e);
  }
  return pairs;
}

std::string PairName(const ::testing::TestParamInfo<std::pair<S, E>>& info) {
  return std::string(KeyLifecycleStateName(info.param.first)) + "_on_" +
         std::string(KeyLifecycleEventName(info.param.second));
}

INSTANTIATE_TEST_SUITE_P(EveryPair, KeyLifecyclePairTest, ::testing::ValuesIn(AllPairs()),
                         PairName);

TEST(KeyLifecycleTest, TheTableHasNoDuplicatePairsAndMatchesTheDesign) {
  std::set<std::pair<S, E>> seen;
  for (const KeyLifecycleTransition& t : KeyLifecycleTable()) {
    EXPECT_TRUE(seen.insert({t.from, t.event}).second)
        << KeyLifecycleStateName(t.from) << " on " << KeyLifecycleEventName(t.event);
  }
  EXPECT_EQ(seen.size(), Expected().size());
  EXPECT_EQ(AllPairs().size(), 5u * 8u);
}

TEST(KeyLifecycleTest, NothingLeadsBackToLoading) {
  for (const KeyLifecycleTransition& t : KeyLifecycleTable()) EXPECT_NE(t.to, S::kLoading);
}

TEST(KeyLifecycleTest, CriticalIsLeftOnlyByAnOperatorAckOrARotation) {
  for (E e : kAllKeyLifecycleEvents) {
    std::optional<S> next = Next(S::kCritical, e);
    if (e == E::kOperatorAck || e == E::kRotationSucceeded) {
      EXPECT_EQ(next, S::kActive);
    } else {
      EXPECT_FALSE(next.has_value()) << KeyLifecycleEventName(e);
    }
  }
}

TEST(KeyLifecycleTest, RotationIsImpossibleWhileDegradedOrLoading) {
  EXPECT_FALSE(Next(S::kDegraded, E::kRotationSucceeded).has_value());
  EXPECT_FALSE(Next(S::kLoading, E::kRotationSucceeded).has_value());
}

TEST(KeyLifecycleTest, SigningIsAllowedEverywhereButLoadingAndFailClosedCritical) {
  EXPECT_FALSE(MaySign(S::kLoading, false));
  EXPECT_TRUE(MaySign(S::kActive, true));
  EXPECT_TRUE(MaySign(S::kDualActive, true));
  EXPECT_TRUE(MaySign(S::kDegraded, true));
  EXPECT_TRUE(MaySign(S::kCritical, false));
  EXPECT_FALSE(MaySign(S::kCritical, true));
}

TEST(KeyLifecycleTest, NamesAreStable) {
  EXPECT_EQ(KeyLifecycleStateName(S::kLoading), "loading");
  EXPECT_EQ(KeyLifecycleStateName(S::kActive), "active");
  EXPECT_EQ(KeyLifecycleStateName(S::kDualActive), "dual_active");
  EXPECT_EQ(KeyLifecycleStateName(S::kDegraded), "degraded");
  EXPECT_EQ(KeyLifecycleStateName(S::kCritical), "critical");
  EXPECT_EQ(KeyLifecycleEventName(E::kOperatorAck), "operator_ack");
}

}  // namespace
}  // namespace kms::jwt
