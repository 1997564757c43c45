// Writes a folder of generated images with captions, as a user's own data
// would come: NAME.png|jpg + NAME.txt pairs of assorted sizes, RGB and grey,
// and captions.json in COCO's layout (one or two captions per image).
// usage: vlm_make_test_images DIR COUNT

#include <cstdio>
#include <fstream>
#include <string>

#include "data/image.h"

namespace {

struct Colour {
  const char* name;
  uint8_t r, g, b;
};
const Colour kColours[] = {{"red", 220, 30, 30},  {"green", 30, 180, 60},   {"blue", 40, 60, 220},
                           {"yellow", 230, 210, 40}, {"white", 245, 245, 245}, {"black", 15, 15, 15}};
constexpr int kColourCount = sizeof kColours / sizeof kColours[0];

uint64_t next(uint64_t& state) {  // xorshift64: the same images on every machine
  state ^= state << 13, state ^= state >> 7, state ^= state << 17;
  return state;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: vlm_make_test_images DIR COUNT\n");
    return 2;
  }
  const std::string dir = argv[1];
  const int count = std::stoi(argv[2]);
  uint64_t state = 0x9e3779b97f4a7c15ULL;
  std::string images_json, annotations_json;
  int annotation = 0;
  for (int i = 0; i < count; ++i) {
    const int height = 40 + static_cast<int>(next(state) % 81), width = 40 + static_cast<int>(next(state) % 81);
    const Colour& fg = kColours[next(state) % kColourCount];
    const Colour* bg = &kColours[next(state) % kColourCount];
    if (bg == &fg) bg = &kColours[(bg - kColours + 1) % kColourCount];
    const bool left = next(state) % 2 == 0;
    const int channels = i % 5 == 4 ? 1 : 3;
    vlm::Image image{height, width, channels, std::vector<uint8_t>(static_cast<size_t>(height) * width * channels)};
    const int side = std::min(height, width) / 2;
    const int top = (height - side) / 2, x0 = left ? width / 8 : width - width / 8 - side;
    for (int y = 0; y < height; ++y) {
      for (int x = 0; x < width; ++x) {
        const bool inside = y >= top && y < top + side && x >= x0 && x < x0 + side;
        const Colour& c = inside ? fg : *bg;
        uint8_t* px = image.pixels.data() + (static_cast<size_t>(y) * width + x) * channels;
        if (channels == 1) {
          px[0] = static_cast<uint8_t>((c.r * 299 + c.g * 587 + c.b * 114) / 1000);
        } else {
          px[0] = c.r, px[1] = c.g, px[2] = c.b;
        }
      }
    }
    char name[32];
    std::snprintf(name, sizeof name, "img_%04d.%s", i, i % 2 == 0 ? "png" : "jpg");
    const std::string caption = std::string("a ") + fg.name + " square on the " + (left ? "left" : "right") +
                                " of a " + bg->name + " picture";
    std::ofstream(dir + "/" + name, std::ios::binary)
        << (i % 2 == 0 ? vlm::encode_png(image) : vlm::encode_jpeg(image, 90));
    std::ofstream(dir + "/" + std::string(name).substr(0, 8) + ".txt") << caption << "\n";
    images_json += std::string(i ? "," : "") + "{\"id\": " + std::to_string(100 + i) + ", \"file_name\": \"" + name +
                   "\", \"height\": " + std::to_string(height) + ", \"width\": " + std::to_string(width) + "}";
    for (int k = 0; k < 1 + i % 2; ++k) {
      annotations_json += std::string(annotation ? "," : "") + "{\"id\": " + std::to_string(annotation) +
                          ", \"image_id\": " + std::to_string(100 + i) + ", \"caption\": \"" +
                          (k == 0 ? caption : std::string("a ") + fg.name + " square") + "\"}";
      ++annotation;
    }
  }
  std::ofstream(dir + "/captions.json") << "{\"info\": {\"description\": \"generated\"}, \"images\": [" << images_json
                                         << "], \"annotations\": [" << annotations_json << "]}\n";
  std::printf("wrote %d images with captions and captions.json (%d captions) to %s\n", count, annotation, dir.c_str());
  return 0;
}
