#include "src/common/log.h"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <memory>

#include "nlohmann/json.hpp"
#include "spdlog/pattern_formatter.h"
#include "spdlog/sinks/stdout_sinks.h"
#include "src/common/request_context.h"
#include "src/common/sync.h"

namespace kms {
namespace {

// A structured payload: kEventMark event kFieldsMark fields-as-JSON-object.
constexpr char kEventMark = '\x1e';
constexpr char kFieldsMark = '\x1f';

Mutex node_mu;
std::string* node_name ABSL_GUARDED_BY(node_mu) = new std::string();

std::string Node() {
  MutexLock lock(&node_mu);
  return *node_name;
}

std::string Time(spdlog::log_clock::time_point tp) {
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(tp.time_since_epoch()).count();
  const std::time_t t = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[40];
  const size_t n = std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  std::snprintf(buf + n, sizeof buf - n, ".%03dZ", static_cast<int>(ms % 1000));
  return buf;
}

std::string Json(const nlohmann::json& j) {
  // Invalid UTF-8 (never expected) is replaced rather than thrown.
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

struct Parsed {
  bool structured = false;
  std::string_view event;
  std::string_view fields_json;
};

Parsed Parse(std::string_view payload) {
  if (payload.empty() || payload.front() != kEventMark) return {};
  const size_t sep = payload.find(kFieldsMark);
  if (sep == std::string_view::npos) return {};
  return {true, payload.substr(1, sep - 1), payload.substr(sep + 1)};
}

class JsonFormatter final : public spdlog::formatter {
 public:
  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    const std::string_view payload(msg.payload.data(), msg.payload.size());
    const Parsed p = Parse(payload);
    nlohmann::json line = {{"time", Time(msg.time)},
                           {"level", std::string(spdlog::level::to_string_view(msg.level).data(),
                                                 spdlog::level::to_string_view(msg.level).size())},
                           {"node", Node()},
                           {"request_id", std::string(RequestIdScope::Current())}};
    std::string out;
    if (p.structured) {
      line["event"] = std::string(p.event);
      out = Json(line);
      // fields_json is already a JSON object (LogEvent wrote it): spliced in as it is.
      out.pop_back();
      out.append(",\"fields\":").append(p.fields_json).append("}");
    } else {
      line["event"] = "message";
      line["fields"] = {{"message", std::string(payload)}};
      out = Json(line);
    }
    out.push_back('\n');
    dest.append(out.data(), out.data() + out.size());
  }
  std::unique_ptr<spdlog::formatter> clone() const override {
    return std::make_unique<JsonFormatter>();
  }
};

class TextFormatter final : public spdlog::formatter {
 public:
  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    const std::string_view payload(msg.payload.data(), msg.payload.size());
    const Parsed p = Parse(payload);
    std::string out = Time(msg.time);
    out.append(" ").append(spdlog::level::to_string_view(msg.level).data(),
                           spdlog::level::to_string_view(msg.level).size());
    if (std::string_view id = RequestIdScope::Current(); !id.empty()) {
      out.append(" [").append(id).append("]");
    }
    out.append(" ");
    if (p.structured) {
      out.append(p.event);
      nlohmann::json fields = nlohmann::json::parse(p.fields_json, nullptr, false);
      if (fields.is_object()) {
        for (auto it = fields.begin(); it != fields.end(); ++it) {
          out.append(" ").append(it.key()).append("=");
          out.append(it->is_string() ? it->get<std::string>() : Json(*it));
        }
      }
    } else {
      out.append(payload);
    }
    out.push_back('\n');
    dest.append(out.data(), out.data() + out.size());
  }
  std::unique_ptr<spdlog::formatter> clone() const override {
    return std::make_unique<TextFormatter>();
  }
};

}  // namespace

bool ParseLogFormat(std::string_view name, LogFormat* out) {
  if (name.empty()) {
    *out = DefaultLogFormat();
  } else if (name == "json") {
    *out = LogFormat::kJson;
  } else if (name == "text") {
    *out = LogFormat::kText;
  } else {
    return false;
  }
  return true;
}

LogFormat DefaultLogFormat() { return isatty(STDERR_FILENO) ? LogFormat::kText : LogFormat::kJson; }

void SetUpLogging(LogFormat format) {
  auto logger = std::make_shared<spdlog::logger>(
      "kmsd", std::make_shared<spdlog::sinks::stderr_sink_mt>());
  if (format == LogFormat::kJson) {
    logger->set_formatter(std::make_unique<JsonFormatter>());
  } else {
    logger->set_formatter(std::make_unique<TextFormatter>());
  }
  logger->flush_on(spdlog::level::trace);  // a crash loses no line already written
  spdlog::set_default_logger(std::move(logger));
}

void SetLogNode(std::string_view node) {
  MutexLock lock(&node_mu);
  *node_name = std::string(node);
}

void LogEvent(spdlog::level::level_enum level, std::string_view event,
              std::initializer_list<std::pair<std::string_view, std::string>> fields) {
  if (!spdlog::should_log(level)) return;
  nlohmann::json j = nlohmann::json::object();
  for (const auto& [k, v] : fields) j[std::string(k)] = v;
  std::string payload;
  payload.push_back(kEventMark);
  payload.append(event);
  payload.push_back(kFieldsMark);
  payload.append(Json(j));
  spdlog::log(level, "{}", payload);
}

}  // namespace kms
