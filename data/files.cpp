#include "data/files.h"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace vlm {

namespace fs = std::filesystem;

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(path + ": cannot open");
  std::ostringstream bytes;
  bytes << in.rdbuf();
  return bytes.str();
}

std::string trimmed(const std::string& s) {
  const size_t begin = s.find_first_not_of(" \t\r\n");
  if (begin == std::string::npos) return "";
  return s.substr(begin, s.find_last_not_of(" \t\r\n") - begin + 1);
}

std::string lower_case(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

bool is_image_extension(const std::string& ext) { return ext == "jpg" || ext == "jpeg" || ext == "png"; }

std::vector<std::string> files_in(const std::string& folder, const std::function<bool(const std::string&)>& wanted) {
  if (!fs::is_directory(folder)) throw std::invalid_argument(folder + ": not a folder");
  std::vector<std::string> files;
  for (const auto& entry : fs::directory_iterator(folder)) {
    const std::string ext = entry.path().extension().string();
    if (entry.is_regular_file() && !ext.empty() && wanted(lower_case(ext.substr(1)))) files.push_back(entry.path().string());
  }
  std::sort(files.begin(), files.end());
  return files;
}

void check_not_an_input(const std::string& output, const std::vector<std::string>& inputs, const std::string& inputs_name) {
  for (const std::string& input : inputs) {
    std::error_code error;
    if (fs::equivalent(output, input, error)) {
      throw std::invalid_argument("--out " + output + " is one of the " + inputs_name + " (" + input +
                                  "): writing it would replace that input. HINT: name a new file");
    }
  }
}

}  // namespace vlm
