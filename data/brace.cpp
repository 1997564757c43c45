#include "data/brace.h"

#include <stdexcept>

namespace vlm {
namespace {

constexpr size_t kMaxExpansion = 10'000'000;  // a typo like {0..99999999999} must not eat memory

std::invalid_argument bad(const std::string& pattern, const std::string& why) {
  return std::invalid_argument("shard pattern '" + pattern + "': " + why +
                               " (write ranges as {00000..00127} and lists as {a,b})");
}

bool all_digits(const std::string& s) {
  return !s.empty() && s.find_first_not_of("0123456789") == std::string::npos;
}

// The alternatives of one brace group's body.
std::vector<std::string> alternatives(const std::string& pattern, const std::string& body) {
  const size_t dots = body.find("..");
  if (dots != std::string::npos) {
    const std::string first = body.substr(0, dots), last = body.substr(dots + 2);
    if (!all_digits(first) || !all_digits(last) || first.size() > 18 || last.size() > 18) {
      throw bad(pattern, "range {" + body + "} needs two non-negative integers");
    }
    const long long from = std::stoll(first), to = std::stoll(last);
    if (to < from) throw bad(pattern, "range {" + body + "} runs backwards");
    if (static_cast<size_t>(to - from) >= kMaxExpansion) throw bad(pattern, "range {" + body + "} is too long");
    const size_t width = first.size() > 1 && first[0] == '0' ? first.size() : 0;
    std::vector<std::string> out;
    for (long long i = from; i <= to; ++i) {
      std::string n = std::to_string(i);
      if (n.size() < width) n.insert(0, width - n.size(), '0');
      out.push_back(std::move(n));
    }
    return out;
  }
  std::vector<std::string> out;
  size_t start = 0;
  while (true) {
    const size_t comma = body.find(',', start);
    out.push_back(body.substr(start, comma - start));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

}  // namespace

std::vector<std::string> expand_braces(const std::string& pattern) {
  std::vector<std::string> results{""};
  size_t pos = 0;
  while (pos < pattern.size()) {
    const size_t open = pattern.find('{', pos);
    const size_t stray_close = pattern.find('}', pos);
    if (stray_close < open) throw bad(pattern, "'}' at " + std::to_string(stray_close) + " closes no '{'");
    const std::string literal = pattern.substr(pos, open == std::string::npos ? std::string::npos : open - pos);
    for (auto& r : results) r += literal;
    if (open == std::string::npos) break;
    const size_t close = pattern.find('}', open);
    if (close == std::string::npos) throw bad(pattern, "'{' at " + std::to_string(open) + " is never closed");
    const std::string body = pattern.substr(open + 1, close - open - 1);
    if (body.find('{') != std::string::npos) throw bad(pattern, "nested braces are not supported");
    const std::vector<std::string> options = alternatives(pattern, body);
    if (results.size() * options.size() > kMaxExpansion) throw bad(pattern, "expands to too many paths");
    std::vector<std::string> next;
    next.reserve(results.size() * options.size());
    for (const auto& r : results) {
      for (const auto& o : options) next.push_back(r + o);
    }
    results = std::move(next);
    pos = close + 1;
  }
  return results;
}

std::vector<std::string> expand_shard_patterns(const std::vector<std::string>& patterns) {
  std::vector<std::string> out;
  for (const auto& p : patterns) {
    for (auto& path : expand_braces(p)) out.push_back(std::move(path));
  }
  return out;
}

}  // namespace vlm
