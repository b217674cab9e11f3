// MockAuthorizer: gMock double of the Authorizer seam (include/kms/authz/authorizer.h).
#pragma once

#include <optional>
#include <string_view>

#include "gmock/gmock.h"
#include "kms/authz/authorizer.h"

namespace kms::testing {

class MockAuthorizer : public authz::Authorizer {
 public:
  MOCK_METHOD(absl::Status, Authorize,
              (std::string_view identity, authz::Operation op, std::string_view tenant_id),
              (const, override));
  MOCK_METHOD(std::optional<authz::RateLimit>, RateLimitFor, (std::string_view identity),
              (const, override));
};

}  // namespace kms::testing
