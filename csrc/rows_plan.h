// The Python entry points of csrc/rows_plan.cpp, added to hrnet_fast._C by
// ops.cpp's module definition.
#pragma once

#include <Python.h>

namespace hrnet_fast {

// rows_plan(...) and run_rows(plan, xs); see rows_plan.cpp.
extern PyMethodDef rows_plan_methods[];

}  // namespace hrnet_fast
