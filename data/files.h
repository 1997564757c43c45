#pragma once
// The files the data tools read: whole files, and the files of a folder
// chosen by extension.

#include <functional>
#include <string>
#include <vector>

namespace vlm {

// The whole file; a std::runtime_error naming it when it cannot be read.
std::string read_file(const std::string& path);

// Without white space at either end.
std::string trimmed(const std::string& s);

std::string lower_case(std::string s);

// "jpg", "jpeg" or "png" (lower case, no dot): what the decoders read.
bool is_image_extension(const std::string& ext);

// The regular files of `folder` whose extension (lower case, no dot) is
// `wanted`, sorted by path; a std::invalid_argument when it is not a folder.
std::vector<std::string> files_in(const std::string& folder, const std::function<bool(const std::string&)>& wanted);

// A std::invalid_argument when `output` is the same file as one of `inputs`
// ("--out X is one of the <inputs_name> (Y)"), which writing it would replace.
void check_not_an_input(const std::string& output, const std::vector<std::string>& inputs, const std::string& inputs_name);

}  // namespace vlm
