// Prints the version of the nibble headers found through find_package(nibble). Needs no GPU.
#include <cstdio>
#include <cstring>
#include <nibble/nibble.cuh>

int main() {
  std::printf("nibble %s\n", NIBBLE_VERSION_STRING);
#ifdef NIBBLE_PACKAGE_VERSION
  // The installed headers and the installed CMake package must come from the same nibble.
  if (std::strcmp(NIBBLE_VERSION_STRING, NIBBLE_PACKAGE_VERSION) != 0) {
    std::printf("error: headers say %s but nibbleConfigVersion.cmake says %s\n",
                NIBBLE_VERSION_STRING, NIBBLE_PACKAGE_VERSION);
    return 1;
  }
#endif
  return 0;
}
