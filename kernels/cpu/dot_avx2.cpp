// AVX2 + FMA + F16C tile kernels (see dot_impl.h). Compiled with -mavx2 -mfma -mf16c (kernels/CMakeLists.txt);
// only reached when cpu_features().has_avx2_level(). Stateless; thread-safe.
#define MOE_DOT_NS avx2
#include "dot_impl.h"

namespace moe::kernels::detail {
void fill_table_avx2(KernelTable& t) { avx2::fill(t); }
}  // namespace moe::kernels::detail
