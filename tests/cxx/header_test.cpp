// The public headers compile as C++ (C++11, -Wall -Wextra -Wpedantic) and
// their functions link with C linkage. Runs without a device.
#include <dynblocks/dynblocks.h>
#include <dynblocks/cl.h>

#include <cstdio>
#include <cstring>

int main() {
  if (dynb_version_number() != DYNB_VERSION_NUMBER ||
      std::strcmp(dynb_version_string(), DYNB_VERSION_STRING) != 0) {
    std::fprintf(stderr, "version mismatch: %s vs %s\n", dynb_version_string(), DYNB_VERSION_STRING);
    return 1;
  }
  dynb_ctx_desc desc = dynb_ctx_desc_default();
  if (desc.struct_size != sizeof desc) return 1;
  if (std::strcmp(dynb_status_name(DYNB_STATUS_SHAPE_MISMATCH), "DYNB_STATUS_SHAPE_MISMATCH") != 0)
    return 1;
  // NULL handles are misuse in C++ as in C.
  dynb_status st = dynb_plan_forward(nullptr, nullptr, nullptr, DYNB_PASS_EVAL);
  if (st != DYNB_STATUS_MISUSE) return 1;
  cl_mem mem = nullptr;
  if (dynb_tensor_cl_mem(nullptr, &mem, nullptr) != DYNB_STATUS_MISUSE) return 1;
  std::printf("dynblocks %s headers OK from C++\n", dynb_version_string());
  return 0;
}
