// Experiment (issue #5, prefill): does another cuSPARSELt operand layout, or keeping the split-K settings that
// cusparseLtMatmulSearch picks, make the M = 2048 GEMMs faster than the production shim
// (compress/runtime/csrc/cslt_shim.cpp)? One plan at a time; plain C ABI for ctypes (bench/cslt_layouts.py).
//   layout 0: A = W (N x K) row-major structured, op N; B = x (M x K) row-major, op T; D = y^T (N x M) col-major
//             (the shim's layout).
//   layout 1: as 0 but B described as x^T (K x M) column-major, op N (same bytes).
//   layout 2: A = x (M x K) row-major dense, op N; B = W (N x K) row-major structured, op T; D = y (M x N) row-major.
// keep_split 0 re-initialises the plan with only the searched algorithm id (what the shim did before),
// 1 also carries over SPLIT_K, SPLIT_K_MODE and SPLIT_K_BUFFERS.
#include <cusparseLt.h>

#include <cstdio>

namespace {
cusparseLtHandle_t h;
bool ready = false;
char err[512] = "";
struct Slot {
  cusparseLtMatDescriptor_t a, b, d;
  cusparseLtMatmulDescriptor_t mm;
  cusparseLtMatmulAlgSelection_t sel;
  cusparseLtMatmulPlan_t plan;
  bool live = false;
} s;
int fail(const char* what, cusparseStatus_t st) {
  std::snprintf(err, sizeof(err), "%s: %s (%d)", what, cusparseLtGetErrorString(st), (int)st);
  return (int)st ? (int)st : -1;
}
// The matmul's A and B: layout 2 has x as A and the weight as B.
const void* first(int layout, const void* w, const void* x) { return layout == 2 ? x : w; }
const void* second(int layout, const void* w, const void* x) { return layout == 2 ? w : x; }
#define CHECK(call)                                              \
  do {                                                           \
    cusparseStatus_t st_ = (call);                               \
    if (st_ != CUSPARSE_STATUS_SUCCESS) return fail(#call, st_); \
  } while (0)
}  // namespace

extern "C" {
const char* lay_error() { return err; }

int lay_free() {
  if (s.live) {
    cusparseLtMatmulPlanDestroy(&s.plan);
    cusparseLtMatmulAlgSelectionDestroy(&s.sel);
    cusparseLtMatDescriptorDestroy(&s.a);
    cusparseLtMatDescriptorDestroy(&s.b);
    cusparseLtMatDescriptorDestroy(&s.d);
    s.live = false;
  }
  return 0;
}

// Describe, plan; return the compressed size and compress-buffer size for W in this layout.
int lay_setup(long n, long k, long m, int layout, size_t* csize, size_t* cbuf) {
  if (!ready) {
    CHECK(cusparseLtInit(&h));
    ready = true;
  }
  lay_free();
  auto bf = CUDA_R_16BF;
  auto N = CUSPARSE_OPERATION_NON_TRANSPOSE, T = CUSPARSE_OPERATION_TRANSPOSE;
  auto S = CUSPARSELT_SPARSITY_50_PERCENT;
  if (layout == 0 || layout == 1) {
    CHECK(cusparseLtStructuredDescriptorInit(&h, &s.a, n, k, k, 16, bf, CUSPARSE_ORDER_ROW, S));
    if (layout == 0)
      CHECK(cusparseLtDenseDescriptorInit(&h, &s.b, m, k, k, 16, bf, CUSPARSE_ORDER_ROW));
    else
      CHECK(cusparseLtDenseDescriptorInit(&h, &s.b, k, m, k, 16, bf, CUSPARSE_ORDER_COL));
    CHECK(cusparseLtDenseDescriptorInit(&h, &s.d, n, m, n, 16, bf, CUSPARSE_ORDER_COL));
    CHECK(cusparseLtMatmulDescriptorInit(&h, &s.mm, N, layout == 0 ? T : N, &s.a, &s.b, &s.d, &s.d,
                                         CUSPARSE_COMPUTE_32F));
  } else {
    CHECK(cusparseLtDenseDescriptorInit(&h, &s.a, m, k, k, 16, bf, CUSPARSE_ORDER_ROW));
    CHECK(cusparseLtStructuredDescriptorInit(&h, &s.b, n, k, k, 16, bf, CUSPARSE_ORDER_ROW, S));
    CHECK(cusparseLtDenseDescriptorInit(&h, &s.d, m, n, n, 16, bf, CUSPARSE_ORDER_ROW));
    CHECK(cusparseLtMatmulDescriptorInit(&h, &s.mm, N, T, &s.a, &s.b, &s.d, &s.d, CUSPARSE_COMPUTE_32F));
  }
  CHECK(cusparseLtMatmulAlgSelectionInit(&h, &s.sel, &s.mm, CUSPARSELT_MATMUL_ALG_DEFAULT));
  CHECK(cusparseLtMatmulPlanInit(&h, &s.plan, &s.mm, &s.sel));
  s.live = true;
  CHECK(cusparseLtSpMMACompressedSize(&h, &s.plan, csize, cbuf));
  return 0;
}

int lay_compress(const void* w, void* out, void* buf, void* stream) {
  CHECK(cusparseLtSpMMACompress(&h, &s.plan, w, out, buf, (cudaStream_t)stream));
  return 0;
}

// Search (on these operands), then re-plan with the algorithm id and (keep_split) the split-K settings.
int lay_search(int layout, int keep_split, const void* w, const void* x, void* y, void* work, void* stream,
               size_t* ws, int* alg, int* split, int* mode, int* bufs) {
  float one = 1.f, zero = 0.f;
  cudaStream_t st = (cudaStream_t)stream;
  const void *a = first(layout, w, x), *b = second(layout, w, x);
  CHECK(cusparseLtMatmulSearch(&h, &s.plan, &one, a, b, &zero, y, y, work, &st, 1));
  CHECK(cusparseLtMatmulAlgGetAttribute(&h, &s.sel, CUSPARSELT_MATMUL_ALG_CONFIG_ID, alg, sizeof(int)));
  CHECK(cusparseLtMatmulAlgGetAttribute(&h, &s.sel, CUSPARSELT_MATMUL_SPLIT_K, split, sizeof(int)));
  CHECK(cusparseLtMatmulAlgGetAttribute(&h, &s.sel, CUSPARSELT_MATMUL_SPLIT_K_MODE, mode, sizeof(int)));
  CHECK(cusparseLtMatmulAlgGetAttribute(&h, &s.sel, CUSPARSELT_MATMUL_SPLIT_K_BUFFERS, bufs, sizeof(int)));
  CHECK(cusparseLtMatmulPlanDestroy(&s.plan));
  CHECK(cusparseLtMatmulAlgSelectionDestroy(&s.sel));
  CHECK(cusparseLtMatmulAlgSelectionInit(&h, &s.sel, &s.mm, CUSPARSELT_MATMUL_ALG_DEFAULT));
  CHECK(cusparseLtMatmulAlgSetAttribute(&h, &s.sel, CUSPARSELT_MATMUL_ALG_CONFIG_ID, alg, sizeof(int)));
  if (keep_split) {
    CHECK(cusparseLtMatmulAlgSetAttribute(&h, &s.sel, CUSPARSELT_MATMUL_SPLIT_K, split, sizeof(int)));
    CHECK(cusparseLtMatmulAlgSetAttribute(&h, &s.sel, CUSPARSELT_MATMUL_SPLIT_K_MODE, mode, sizeof(int)));
    CHECK(cusparseLtMatmulAlgSetAttribute(&h, &s.sel, CUSPARSELT_MATMUL_SPLIT_K_BUFFERS, bufs, sizeof(int)));
  }
  CHECK(cusparseLtMatmulPlanInit(&h, &s.plan, &s.mm, &s.sel));
  CHECK(cusparseLtMatmulGetWorkspace(&h, &s.plan, ws));
  return 0;
}

int lay_matmul(int layout, const void* w, const void* x, void* y, void* work, void* stream) {
  float one = 1.f, zero = 0.f;
  cudaStream_t st = (cudaStream_t)stream;
  const void *a = first(layout, w, x), *b = second(layout, w, x);
  CHECK(cusparseLtMatmul(&h, &s.plan, &one, a, b, &zero, y, y, work, &st, 1));
  return 0;
}
}
