#include "src/coord/invalidation_codec.h"

#include <charconv>

#include "absl/strings/str_cat.h"

namespace kms::coord {
namespace {

constexpr std::string_view kMagic = "kmsd-inv1";

struct KindName {
  InvalidationEvent::Kind kind;
  std::string_view name;
};
constexpr KindName kKinds[] = {
    {InvalidationEvent::Kind::kTenant, "tenant"},
    {InvalidationEvent::Kind::kKek, "kek"},
    {InvalidationEvent::Kind::kJwt, "jwt"},
    {InvalidationEvent::Kind::kAll, "all"},
};

void AppendField(std::string* out, std::string_view value) {
  absl::StrAppend(out, value.size(), ":");
  out->append(value.data(), value.size());
}

// Consumes `expected` from the front of `*in`.
bool Consume(std::string_view* in, std::string_view expected) {
  if (in->substr(0, expected.size()) != expected) return false;
  in->remove_prefix(expected.size());
  return true;
}

bool ConsumeField(std::string_view* in, std::string* value) {
  size_t length = 0;
  const char* begin = in->data();
  const auto [end, ec] = std::from_chars(begin, begin + in->size(), length);
  if (ec != std::errc() || end == begin) return false;
  in->remove_prefix(static_cast<size_t>(end - begin));
  if (!Consume(in, ":") || in->size() < length) return false;
  value->assign(in->data(), length);
  in->remove_prefix(length);
  return true;
}

absl::Status Malformed(std::string_view why) {
  return absl::InvalidArgumentError(
      absl::StrCat("malformed invalidation event: ", std::string(why)));
}

}  // namespace

std::string_view InvalidationKindName(InvalidationEvent::Kind kind) {
  for (const KindName& k : kKinds) {
    if (k.kind == kind) return k.name;
  }
  return "all";
}

std::string EncodeInvalidationEvent(const InvalidationEvent& event) {
  std::string out(kMagic);
  out += ' ';
  const std::string_view kind = InvalidationKindName(event.kind);
  out.append(kind.data(), kind.size());
  out += ' ';
  AppendField(&out, event.origin);
  out += ' ';
  AppendField(&out, event.tenant_id);
  return out;
}

absl::StatusOr<InvalidationEvent> DecodeInvalidationEvent(std::string_view payload) {
  if (payload.size() > kMaxInvalidationPayload) return Malformed("too long");
  std::string_view in = payload;
  if (!Consume(&in, kMagic) || !Consume(&in, " ")) return Malformed("unknown version");
  InvalidationEvent event;
  bool known = false;
  for (const KindName& k : kKinds) {
    std::string_view rest = in;
    if (Consume(&rest, k.name) && Consume(&rest, " ")) {
      event.kind = k.kind;
      in = rest;
      known = true;
      break;
    }
  }
  if (!known) return Malformed("unknown kind");
  if (!ConsumeField(&in, &event.origin)) return Malformed("bad origin");
  if (!Consume(&in, " ")) return Malformed("missing separator");
  if (!ConsumeField(&in, &event.tenant_id)) return Malformed("bad tenant id");
  if (!in.empty()) return Malformed("trailing bytes");
  if (event.kind == InvalidationEvent::Kind::kTenant && event.tenant_id.empty()) {
    return Malformed("tenant event without a tenant id");
  }
  return event;
}

}  // namespace kms::coord
