// Declarations shared by the op registration and the backend kernels.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>
#include <c10/util/string_view.h>

#include <string_view>
#include <tuple>
#include <vector>

#include "interp.h"

namespace hrnet_fast {

// The op (schema in ops.cpp):
//   y = act( sum_k interp(inputs[k] * scales[k] + shifts[k], size) )
// scales and shifts are dense (K, C); identity entries are ones / zeros,
// filled in by the Python wrapper or by exchange_lists (exchange_lists.cpp),
// which takes one (C,) tensor per input.
using TensorList = c10::ArrayRef<at::Tensor>;

// Parses the schema's mode string; throws for anything else.
Mode parse_mode(std::string_view mode);

// Argument checks every backend runs before launching (the Python wrapper
// checks the same with friendlier messages; these guard direct op calls):
// the inputs against each other and the output size, then the dense rows.
void check_exchange_inputs(TensorList inputs, c10::IntArrayRef size);
void check_exchange_args(TensorList inputs, const at::Tensor& scales, const at::Tensor& shifts,
                         c10::IntArrayRef size);

// The CPU forward on one (C,) scale and shift row per input, read in place
// (empty lists: the identity). For exchange_lists' plain CPU calls, which
// would otherwise build dense rows and dispatch once more. The rows must be
// contiguous, on the CPU, in the affine dtype (float64 for float64 inputs,
// else float32) and checked (shape, count) by the caller.
at::Tensor exchange_cpu_lists(TensorList inputs, TensorList scales, TensorList shifts, c10::IntArrayRef size,
                              c10::string_view mode, bool align_corners, bool relu);

// Memory format of an output (or gradient) that follows tensor `first`:
// channels_last when `first` is unambiguously channels_last.
at::MemoryFormat output_format(const at::Tensor& first);

}  // namespace hrnet_fast
