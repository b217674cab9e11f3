#include "src/common/strict_json.h"

#include <exception>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "src/common/strings.h"

namespace kms {

using Json = nlohmann::json;

absl::StatusOr<Json> ParseStrictJson(std::string_view text, std::string_view what,
                                     int max_depth, std::string_view duplicate_key_prefix) {
  std::vector<std::set<std::string>> open_objects;  // keys seen, per open object
  std::string duplicate;
  bool too_deep = false;
  Json::parser_callback_t callback = [&](int depth, Json::parse_event_t event,
                                         Json& parsed) -> bool {
    switch (event) {
      case Json::parse_event_t::object_start:
        open_objects.emplace_back();
        if (depth > max_depth) too_deep = true;
        break;
      case Json::parse_event_t::array_start:
        if (depth > max_depth) too_deep = true;
        break;
      case Json::parse_event_t::object_end:
        if (!open_objects.empty()) open_objects.pop_back();
        break;
      case Json::parse_event_t::key:
        if (!open_objects.empty() && parsed.is_string() &&
            !open_objects.back().insert(parsed.get<std::string>()).second &&
            duplicate.empty()) {
          duplicate = parsed.get<std::string>();
        }
        break;
      default:
        break;
    }
    return true;
  };
  Json root;
  try {
    root = Json::parse(text.begin(), text.end(), callback, /*allow_exceptions=*/true,
                       /*ignore_comments=*/false);
  } catch (const Json::parse_error& e) {
    // e.what() is "[json.exception.parse_error.101] parse error at line L, column C: ...".
    std::string_view message = e.what();
    if (size_t pos = message.find("] "); pos != std::string_view::npos) {
      message.remove_prefix(pos + 2);
    }
    return absl::InvalidArgumentError(
        absl::StrCat(Av(what), " is not valid JSON (byte ", e.byte, "): ", Av(message)));
  } catch (const Json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(Av(what), " is not valid JSON: ", e.what()));
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(Av(what), " could not be parsed: ", e.what()));
  }
  if (too_deep) {
    return absl::InvalidArgumentError(
        absl::StrCat(Av(what), " nests deeper than ", max_depth, " levels"));
  }
  if (!duplicate.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(Av(duplicate_key_prefix), "duplicate key '", duplicate, "'"));
  }
  return root;
}

}  // namespace kms
