// The Python entry points of the C++ eval-program executor (executor.cpp),
// added to hrnet_fast._C by ops.cpp's module definition.
#pragma once

#include <Python.h>

namespace hrnet_fast {

// plan_build(...) and plan_run(state, xs); see executor.cpp.
extern PyMethodDef plan_methods[];

}  // namespace hrnet_fast
