// Log-prob ops over the rows of a [N, V] logits matrix on CPU tensors; see the contract in
// rbr_fast/ops/logprobs/reference.py.
#pragma once
#include <ATen/ATen.h>
#include <pybind11/pybind11.h>

#include <vector>

namespace rbr_fast {

std::vector<at::Tensor> yes_no_lse(const at::Tensor& logits, const at::Tensor& yes_ids, const at::Tensor& no_ids);
std::vector<at::Tensor> label_logprobs(const at::Tensor& logits, const at::Tensor& labels, double inv_temp,
                                       int64_t ignore_index);
at::Tensor label_logprobs_backward(const at::Tensor& grad, const at::Tensor& logits, const at::Tensor& labels,
                                   const at::Tensor& lse, double inv_temp, int64_t ignore_index);

// Adds the functions above to the extension module (module.cpp calls it).
void bind_logprobs(pybind11::module_& m);

}  // namespace rbr_fast
