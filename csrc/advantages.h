// Advantage ops on CPU tensors; see rbr_fast/ops/__init__.py for the backend contract.
#pragma once
#include <ATen/ATen.h>
#include <pybind11/pybind11.h>

#include <optional>
#include <vector>

namespace rbr_fast {

std::vector<at::Tensor> gae(const at::Tensor& rewards, const at::Tensor& values, const at::Tensor& mask, double gamma,
                            double lam, const std::optional<at::Tensor>& adv_out,
                            const std::optional<at::Tensor>& ret_out);
std::vector<at::Tensor> masked_whiten(const at::Tensor& x, const at::Tensor& mask, bool shift_mean, double eps);
std::vector<at::Tensor> shape_rewards(const at::Tensor& scores, const at::Tensor& logprobs,
                                      const at::Tensor& ref_logprobs, const at::Tensor& mask, double kl_coef,
                                      int64_t kl_estimator);
std::vector<at::Tensor> ppo_advantages(const at::Tensor& scores, const at::Tensor& logprobs,
                                       const at::Tensor& ref_logprobs, const at::Tensor& values,
                                       const at::Tensor& mask, double kl_coef, int64_t kl_estimator, double gamma,
                                       double lam, bool whiten, double eps, const std::optional<at::Tensor>& adv_out,
                                       const std::optional<at::Tensor>& ret_out);

// Adds the functions above to the extension module (module.cpp calls it).
void bind_advantages(pybind11::module_& m);

}  // namespace rbr_fast
