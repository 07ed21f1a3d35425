// Prints the version of the nibble headers found through find_package(nibble). Needs no GPU.
#include <cstdio>
#include <cstring>
#include <nibble/nibble.cuh>

int main() {
  std::printf("nibble %s\n", NIBBLE_VERSION_STRING);
#ifdef NIBBLE_SM90A
  // Defined by the package when this target's CUDA_ARCHITECTURES list 90a: the GEMM may use wgmma.
  std::printf("sm_90a device code: yes (NIBBLE_SM90A)\n");
#else
  std::printf("sm_90a device code: no\n");
#endif
#ifdef NIBBLE_EXPECT_SM90A
  const bool expect_sm90a = true;
#else
  const bool expect_sm90a = false;
#endif
#ifdef NIBBLE_SM90A
  const bool have_sm90a = true;
#else
  const bool have_sm90a = false;
#endif
  if (expect_sm90a != have_sm90a) {
    std::printf("error: NIBBLE_SM90A does not follow CUDA_ARCHITECTURES\n");
    return 1;
  }
#ifdef NIBBLE_PACKAGE_VERSION
  // The installed headers and the installed CMake package must come from the same nibble.
  if (std::strcmp(NIBBLE_VERSION_STRING, NIBBLE_PACKAGE_VERSION) != 0) {
    std::printf("error: headers say %s but nibbleConfigVersion.cmake says %s\n", NIBBLE_VERSION_STRING,
                NIBBLE_PACKAGE_VERSION);
    return 1;
  }
#endif
  return 0;
}
