// Python bindings of the rbr_fast._C extension: each op's file binds its own kernels.
#include <pybind11/pybind11.h>

#include "advantages.h"
#include "buffers.h"
#include "decode.h"
#include "logprobs.h"
#include "reward.h"
#include "simd.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "rbr_fast CPU kernels (validated inputs only: call them through rbr_fast.ops)";
  rbr_fast::bind_advantages(m);
  rbr_fast::bind_buffers(m);
  rbr_fast::bind_logprobs(m);
  rbr_fast::bind_reward(m);
  rbr_fast::bind_decode(m);
  // the vector width of the kernels that have two (by_width): the tests run both on one CPU
  m.def("simd_lanes", [](int lanes) {
    int& now = rbr_fast::lanes_setting();
    if (lanes == 16 && !RBR_WIDE) throw std::invalid_argument("simd_lanes: 16 lanes need an x86-64 build");
#if RBR_WIDE
    if (lanes == 16 && !rbr_fast::cpu_has_avx512()) throw std::invalid_argument("simd_lanes: this CPU has no AVX-512");
#endif
    if (lanes != 0 && lanes != 8 && lanes != 16) throw std::invalid_argument("simd_lanes: 0 (query), 8 or 16");
    if (lanes) now = lanes;
    return now;
  }, pybind11::arg("lanes") = 0);
}
