// Error handling across modules: absl::Status / absl::StatusOr<T>, never exceptions.
//
// The two macros are the only control-flow macros of the project.
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define KMS_STATUS_CONCAT_INNER_(a, b) a##b
#define KMS_STATUS_CONCAT_(a, b) KMS_STATUS_CONCAT_INNER_(a, b)

// Returns from the enclosing function when `expr` (an absl::Status) is not OK.
#define KMS_RETURN_IF_ERROR(expr)              \
  do {                                         \
    ::absl::Status kms_status_ = (expr);       \
    if (!kms_status_.ok()) return kms_status_; \
  } while (0)

// `lhs = value of rexpr` (an absl::StatusOr<T>), or returns its error.
#define KMS_ASSIGN_OR_RETURN(lhs, rexpr) \
  KMS_ASSIGN_OR_RETURN_IMPL_(KMS_STATUS_CONCAT_(kms_statusor_, __LINE__), lhs, rexpr)
#define KMS_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, rexpr) \
  auto statusor = (rexpr);                               \
  if (!statusor.ok()) return std::move(statusor).status(); \
  lhs = std::move(statusor).value()
