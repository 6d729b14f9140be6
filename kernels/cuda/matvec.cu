// kernels/cuda/matvec.cu — host half of the matvec family: argument checks and the type switch for
// moe::cuda::matvec / matvec_experts (matvec.cuh). The kernels are instantiated in matvec_q.cu,
// matvec_k.cu and matvec_float.cu. Thread-safety: stateless.
#define MOE_MATVEC_DECLARE_ONLY 1
#include <string>

#include "common.cuh"
#include "dequant.cuh"
#include "matvec.cuh"
#include "matvec_kernel.cuh"

namespace moe::cuda {

namespace {

size_t load_alignment(TensorType t) {
  switch (t) {
    case TensorType::F32: case TensorType::Q8_K: return 4;
    case TensorType::MXFP4: return 1;
    default: return 2;
  }
}

// Throws InvalidArgument unless (type, cols, n, stride, alignment) meet matvec.cuh's preconditions.
void check_shape(const char* who, TensorType t, const void* w, size_t offset, size_t row_stride, int64_t rows,
                 int64_t cols, int n) {
  const TypeTraits* tr = type_traits(static_cast<uint32_t>(t));
  const std::string name = tr ? tr->name : "unknown";
  if (!tr || !matvec_supported(t))
    fail_invalid_argument(std::string(who) + ": no GPU matvec for type " + name);
  if (rows < 0 || cols < 0 || cols % mv::kChunk != 0 || cols % tr->block_elems != 0)
    fail_invalid_argument(std::string(who) + ": " + name + ": cols " + std::to_string(cols) +
                          " must be a multiple of 32 and of the block size " + std::to_string(tr->block_elems) +
                          " (rows " + std::to_string(rows) + ")");
  if (n < 1 || n > kMatvecMaxBatch)
    fail_invalid_argument(std::string(who) + ": n " + std::to_string(n) + " tokens outside [1, " +
                          std::to_string(kMatvecMaxBatch) + "]");
  const uint64_t rb = *row_bytes(t, static_cast<uint64_t>(cols));
  if (rows > 1 && row_stride < rb)
    fail_invalid_argument(std::string(who) + ": row stride " + std::to_string(row_stride) + " < row bytes " +
                          std::to_string(rb));
  const size_t a = load_alignment(t);
  if (row_stride % a != 0 || offset % a != 0 || reinterpret_cast<uintptr_t>(w) % a != 0)
    fail_invalid_argument(std::string(who) + ": " + name + " weights, offset or row stride not aligned to " +
                          std::to_string(a));
}

void launch_typed(TensorType t, const mv::Params& p, int n_jobs, cudaStream_t s) {
  const bool ok = mv::dispatch_type(t, [&]<TensorType T>() { mv::launch<T>(p, n_jobs, s); });
  if (!ok) fail_invalid_argument("cuda::matvec: no kernel for this type");
}

}  // namespace

// The same set as dequantize_rows (dequant.cuh): every type with a chunk decoder.
bool matvec_supported(TensorType t) noexcept {
  return type_traits(static_cast<uint32_t>(t)) != nullptr && dequantize_supported(t);
}

void matvec(TensorType wt, const void* W, size_t row_stride, int64_t rows, int64_t cols, const float* x, int n,
            float* y, cudaStream_t stream) {
  check_shape("cuda::matvec", wt, W, 0, row_stride, rows, cols, n);
  if (rows == 0) return;
  mv::Params p;
  p.w = static_cast<const uint8_t*>(W);
  p.row_stride = row_stride;
  p.rows = rows;
  p.cols = cols;
  p.x = x;
  p.n = n;
  p.y = y;
  launch_typed(wt, p, 1, stream);
}

void matvec_experts(const ExpertMatvec& a, cudaStream_t stream) {
  check_shape("cuda::matvec_experts", a.type, nullptr, a.offset, a.row_stride, a.rows, a.cols, a.n);
  if (a.n_jobs < 0 || a.n_slots < 0 || a.n_jobs > 65535)
    fail_invalid_argument("cuda::matvec_experts: n_jobs " + std::to_string(a.n_jobs) + " outside [0, 65535] or n_slots " +
                          std::to_string(a.n_slots) + " < 0");
  if (a.y_job_stride < a.n * a.rows && a.n_jobs > 1)
    fail_invalid_argument("cuda::matvec_experts: y_job_stride " + std::to_string(a.y_job_stride) +
                          " overlaps the jobs' outputs (n*rows = " + std::to_string(a.n * a.rows) + ")");
  if (!a.slots && a.n_slots > 0) fail_invalid_argument("cuda::matvec_experts: n_slots > 0 but no slot table");
  if (a.jobs_lo < 0 || a.jobs_lo > a.n_jobs)
    fail_invalid_argument("cuda::matvec_experts: jobs_lo " + std::to_string(a.jobs_lo) + " outside [0, n_jobs]");
  if (a.jobs_lo > 0) check_shape("cuda::matvec_experts", a.type, nullptr, a.offset_hi, a.row_stride, a.rows, a.cols,
                                 a.n);
  if (a.rows == 0 || a.n_jobs == 0 || a.n_slots == 0) return;
  mv::Params p;
  p.slots = a.slots;
  p.n_slots = a.n_slots;
  p.ids = a.ids;
  p.offset = a.offset;
  p.row_stride = a.row_stride;
  p.rows = a.rows;
  p.cols = a.cols;
  p.x = a.x;
  p.x_job_stride = a.x_job_stride;
  p.n = a.n;
  p.y = a.y;
  p.y_job_stride = a.y_job_stride;
  p.jobs_lo = a.jobs_lo;
  p.offset_hi = a.offset_hi;
  launch_typed(a.type, p, a.n_jobs, stream);
}

}  // namespace moe::cuda
