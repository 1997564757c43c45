#pragma once
// Small text pieces shared by reports and run files.

#include <string>
#include <vector>

namespace vlm {

// This host's name (gethostname), "?" if it cannot be read.
std::string host_name();

// `text` as a JSON string literal: quotes and backslashes escaped, control
// characters as \u00XX.
std::string json_string(const std::string& text);

// "1, 4": for rank lists in reports ("{1, 4}") and JSON ("[1, 4]").
std::string comma_separated(const std::vector<int>& numbers);

}  // namespace vlm
