// The check of the CTest programs: a failed condition prints where and
// why, and counts in `failures` (main reports them and fails the test).
#pragma once

#include <cstdio>

namespace hrnet_fast {
namespace testing {
inline int failures = 0;
}  // namespace testing
}  // namespace hrnet_fast

#define EXPECT(cond, ...)                              \
  do {                                                 \
    if (!(cond)) {                                     \
      std::printf("FAIL %s:%d: ", __FILE__, __LINE__); \
      std::printf(__VA_ARGS__);                        \
      std::printf("\n");                               \
      ++hrnet_fast::testing::failures;                 \
    }                                                  \
  } while (0)
