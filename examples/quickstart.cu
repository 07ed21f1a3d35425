// examples/quickstart.cu — placeholder; the real quick start replaces this file.
#include <cstdio>

int main() {
  std::printf("nibble quickstart: TODO\n");
  return 0;
}
