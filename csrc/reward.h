// The RBR reward on CPU tensors: conjunction features then the per-response-type linear reward;
// see the contract in rbr_fast/ops/reward/reference.py.
#pragma once
#include <ATen/ATen.h>
#include <pybind11/pybind11.h>

#include <vector>

namespace rbr_fast {

std::vector<at::Tensor> rbr_reward(const at::Tensor& x, const at::Tensor& lit_idx, const at::Tensor& lit_neg,
                                   const at::Tensor& weights, const at::Tensor& rtype, const at::Tensor& bias);

// Adds the functions above to the extension module (module.cpp calls it).
void bind_reward(pybind11::module_& m);

}  // namespace rbr_fast
