#pragma once
// What an error says to a person: LibTorch's message without the C++
// backtrace it carries (frames of library addresses that do not help a user),
// and, when memory ran out, the settings that need less of it.

#include <exception>
#include <string>

namespace vlm {

std::string error_text(const std::exception& error);

}  // namespace vlm
