// Output buffers the CPU ops reuse across calls once the caller has let go of them.
#pragma once
#include <ATen/ATen.h>
#include <pybind11/pybind11.h>

namespace rbr_fast {

// Which output a buffer is: one cached tensor per slot.
enum class Slot { GaeAdvantages, GaeReturns, PpoAdvantages, PpoReturns, ShapedRewards, Whitened, kCount };

// Buffers up to this size are cached (so at most kCount of them are held between calls).
constexpr int64_t kReuseMaxBytes = int64_t{32} << 20;

// An uninitialised contiguous tensor shaped and typed like `like`, over the slot's cached memory
// when nothing outside the cache references it any more and its size matches, else over fresh
// memory, which the slot then caches. A fresh multi-MiB CPU tensor costs one page fault per 4 KiB (glibc gives
// large blocks back to the OS on free), 10-25x the time of the GAE kernels themselves.
at::Tensor reusable_like(Slot slot, const at::Tensor& like);

// Drops every cached buffer (the memory goes back to the allocator when nobody else holds it).
void release_buffers();

void bind_buffers(pybind11::module_& m);

}  // namespace rbr_fast
