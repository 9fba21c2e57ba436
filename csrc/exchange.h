// Declarations shared by the op registration and the backend kernels.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>

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
// checks the same with friendlier messages; these guard direct op calls).
void check_exchange_args(TensorList inputs, const at::Tensor& scales, const at::Tensor& shifts,
                         c10::IntArrayRef size);

// Memory format of an output (or gradient) that follows tensor `first`:
// channels_last when `first` is unambiguously channels_last.
at::MemoryFormat output_format(const at::Tensor& first);

}  // namespace hrnet_fast
