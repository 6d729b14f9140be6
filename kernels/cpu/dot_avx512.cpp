// AVX-512 (F/BW/VL/VNNI/BF16) tile kernels (see dot_impl.h). Compiled with the matching -m flags
// (kernels/CMakeLists.txt); only reached when cpu_features().has_avx512_level(). Stateless; thread-safe.
#define MOE_DOT_NS avx512
#define MOE_DOT_AVX512 1
#include "dot_impl.h"

namespace moe::kernels::detail {
void fill_table_avx512(KernelTable& t) { avx512::fill(t); }
}  // namespace moe::kernels::detail
