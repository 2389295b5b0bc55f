// The output cache of buffers.h: a storage per slot. Each call wraps it in a new tensor, and the
// storage is handed out again only when the cache holds its sole reference (no tensor, view,
// autograd record or numpy array of the caller's still points at the memory) and its memory is
// still the one allocated for it (not moved to shared memory for another process). Handing out the
// cached tensor itself would not do: Python keeps a dropped tensor's object alive while C++ code
// still references the tensor, so the count never falls back.
#include "buffers.h"

#include <array>
#include <mutex>

namespace rbr_fast {
namespace {

struct Cached {
  c10::Storage storage;
  const void* data = nullptr;  // where it was allocated: share_memory_() moves it to shared memory,
                               // which another process may still read after our last reference goes
};

std::mutex cache_lock;
std::array<Cached, static_cast<size_t>(Slot::kCount)> cache;

}  // namespace

at::Tensor reusable_like(Slot slot, const at::Tensor& like) {
  const auto opts = like.options().memory_format(at::MemoryFormat::Contiguous);
  const int64_t nbytes = like.numel() * static_cast<int64_t>(like.element_size());
  if (!like.device().is_cpu() || nbytes > kReuseMaxBytes) return at::empty(like.sizes(), opts);
  std::lock_guard<std::mutex> hold(cache_lock);
  Cached& cached = cache[static_cast<size_t>(slot)];
  const c10::Storage& s = cached.storage;
  if (!s || s.use_count() != 1 || static_cast<int64_t>(s.nbytes()) != nbytes || s.data() != cached.data) {
    cached.storage = at::empty(like.sizes(), opts).storage();
    cached.data = cached.storage.data();
  }
  // a new tensor over the storage: inference or not as the caller's mode is now
  return at::empty({0}, opts).set_(cached.storage, 0, like.sizes());
}

void release_buffers() {
  std::lock_guard<std::mutex> hold(cache_lock);
  for (auto& c : cache) c = Cached();
}

void bind_buffers(pybind11::module_& m) { m.def("release_buffers", &release_buffers); }

}  // namespace rbr_fast
