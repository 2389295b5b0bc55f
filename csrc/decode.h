// Decode-time linear layers on CPU: a few input rows against a large weight matrix.
#pragma once
#include <ATen/ATen.h>
#include <pybind11/pybind11.h>

namespace rbr_fast {

// out[m, n] = x[m] . w[n] (+ bias[n]); x [M, K], w [N, K], float32, contiguous (validated in Python).
at::Tensor skinny_linear(const at::Tensor& x, const at::Tensor& w, const c10::optional<at::Tensor>& bias);

// Adds the functions above to the extension module (module.cpp calls it).
void bind_decode(pybind11::module_& m);

}  // namespace rbr_fast
