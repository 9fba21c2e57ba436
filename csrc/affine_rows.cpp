// Per-input affine rows as the kernels read them (exchange.h).
#include <cstdint>

#include "exchange.h"

namespace hrnet_fast {

AffineRows affine_rows(const OptionalTensors& rows, size_t count, at::ScalarType dtype, size_t align) {
  AffineRows out;
  out.ptr.assign(count, nullptr);
  for (size_t k = 0; k < rows.size() && k < count; ++k) {
    std::optional<at::Tensor> given = rows.get(k);
    if (!given.has_value() || !given->defined()) continue;
    at::Tensor r = std::move(*given);
    out.any = true;
    const bool usable = r.scalar_type() == dtype && r.is_contiguous() && !r.is_neg() && !r.is_conj() &&
                        reinterpret_cast<uintptr_t>(r.const_data_ptr()) % align == 0;
    if (!usable) {
      // A lazily negated row must not be read raw; a converted copy is
      // fresh from the allocator, so aligned for any `align` up to 16.
      if (r.is_neg()) r = r.resolve_neg();
      r = r.to(dtype).contiguous();
      if (reinterpret_cast<uintptr_t>(r.const_data_ptr()) % align != 0) r = r.clone();
      out.keep.push_back(r);
    }
    out.ptr[k] = r.const_data_ptr();
  }
  return out;
}

}  // namespace hrnet_fast
