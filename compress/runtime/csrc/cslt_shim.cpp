// cuSPARSELt with descriptors and plans made once and reused (issue #5, prefill path).
//
// torch._cslt_sparse_mm builds descriptors, an algorithm selection and a plan on every call and destroys them
// after (aten/src/ATen/native/sparse/cuda/cuSPARSELtOps.cpp), which costs hundreds of microseconds of host time
// per matmul. Here a plan is created once per (N, K, M, dtype), optionally tuned with cusparseLtMatmulSearch,
// and cached; a matmul is then one cusparseLtMatmul call. Plans bind no pointers, so every weight of one shape
// shares them. Layouts (as torch's transpose_result path): A = W (N x K) row-major, structured 2:4;
// B = x (M x K) row-major read as op(B) = B^T; D = y^T (N x M) column-major, i.e. y (M x N) row-major.
// Plain C ABI for ctypes: no torch headers, so it builds with g++ in about a second.
#include <cusparseLt.h>

#include <cstdio>
#include <cstring>
#include <map>
#include <mutex>
#include <tuple>

namespace {

cusparseLtHandle_t g_handle;
bool g_ready = false;
std::mutex g_mutex;
char g_error[512] = "";

struct Plan {
  cusparseLtMatDescriptor_t a, b, d;
  cusparseLtMatmulDescriptor_t mm;
  cusparseLtMatmulAlgSelection_t sel;
  cusparseLtMatmulPlan_t plan;
  size_t workspace = 0;
  int alg = 0;
};

std::map<std::tuple<long, long, long, int>, Plan*> g_plans;

int fail(const char* what, cusparseStatus_t st) {
  std::snprintf(g_error, sizeof(g_error), "%s failed: %s (%d)", what, cusparseLtGetErrorString(st), (int)st);
  return (int)st == 0 ? -1 : (int)st;
}

#define CHECK(call)                                  \
  do {                                               \
    cusparseStatus_t st_ = (call);                   \
    if (st_ != CUSPARSE_STATUS_SUCCESS) return fail(#call, st_); \
  } while (0)

cudaDataType dtype_of(int code) { return code == 1 ? CUDA_R_16F : CUDA_R_16BF; }

int describe_a(cusparseLtMatDescriptor_t* a, long n, long k, int code) {
  CHECK(cusparseLtStructuredDescriptorInit(&g_handle, a, n, k, k, 16, dtype_of(code), CUSPARSE_ORDER_ROW,
                                           CUSPARSELT_SPARSITY_50_PERCENT));
  return 0;
}

// The split-K attributes the search may choose (cuSPARSELt's defaults otherwise); torch's
// _cslt_sparse_mm takes them as arguments too (aten/src/ATen/native/sparse/cuda/cuSPARSELtOps.cpp).
const cusparseLtMatmulAlgAttribute_t kSplitAttrs[] = {CUSPARSELT_MATMUL_SPLIT_K, CUSPARSELT_MATMUL_SPLIT_K_MODE,
                                                      CUSPARSELT_MATMUL_SPLIT_K_BUFFERS};

int init_plan(Plan* p, int alg, const int* split = nullptr) {
  CHECK(cusparseLtMatmulAlgSelectionInit(&g_handle, &p->sel, &p->mm, CUSPARSELT_MATMUL_ALG_DEFAULT));
  CHECK(cusparseLtMatmulAlgSetAttribute(&g_handle, &p->sel, CUSPARSELT_MATMUL_ALG_CONFIG_ID, &alg, sizeof(alg)));
  for (int i = 0; split && i < 3; ++i)
    CHECK(cusparseLtMatmulAlgSetAttribute(&g_handle, &p->sel, kSplitAttrs[i], &split[i], sizeof(int)));
  CHECK(cusparseLtMatmulPlanInit(&g_handle, &p->plan, &p->mm, &p->sel));
  CHECK(cusparseLtMatmulGetWorkspace(&g_handle, &p->plan, &p->workspace));
  p->alg = alg;
  return 0;
}

}  // namespace

extern "C" {

const char* cslt_last_error() { return g_error; }

int cslt_init() {
  std::lock_guard<std::mutex> lock(g_mutex);
  if (!g_ready) {
    CHECK(cusparseLtInit(&g_handle));
    g_ready = true;
  }
  return 0;
}

// Bytes of the compressed form of an (n x k) 2:4 matrix, and of the scratch buffer compression needs.
int cslt_compressed_size(long n, long k, int code, size_t* size, size_t* buffer) {
  cusparseLtMatDescriptor_t a;
  int rc = describe_a(&a, n, k, code);
  if (rc) return rc;
  CHECK(cusparseLtSpMMACompressedSize2(&g_handle, &a, size, buffer));
  CHECK(cusparseLtMatDescriptorDestroy(&a));
  return 0;
}

int cslt_compress(long n, long k, int code, const void* dense, void* out, void* buffer, void* stream) {
  cusparseLtMatDescriptor_t a;
  int rc = describe_a(&a, n, k, code);
  if (rc) return rc;
  CHECK(cusparseLtSpMMACompress2(&g_handle, &a, 1, CUSPARSE_OPERATION_NON_TRANSPOSE, dense, out, buffer,
                                 (cudaStream_t)stream));
  CHECK(cusparseLtMatDescriptorDestroy(&a));
  return 0;
}

// The cached plan for (n, k, m, dtype): its id (a pointer), workspace bytes and algorithm id.
int cslt_plan(long n, long k, long m, int code, void** plan_out, size_t* workspace, int* alg) {
  std::lock_guard<std::mutex> lock(g_mutex);
  auto key = std::make_tuple(n, k, m, code);
  auto it = g_plans.find(key);
  if (it == g_plans.end()) {
    Plan* p = new Plan();
    int rc = describe_a(&p->a, n, k, code);
    if (rc) return rc;
    CHECK(cusparseLtDenseDescriptorInit(&g_handle, &p->b, m, k, k, 16, dtype_of(code), CUSPARSE_ORDER_ROW));
    CHECK(cusparseLtDenseDescriptorInit(&g_handle, &p->d, n, m, n, 16, dtype_of(code), CUSPARSE_ORDER_COL));
    CHECK(cusparseLtMatmulDescriptorInit(&g_handle, &p->mm, CUSPARSE_OPERATION_NON_TRANSPOSE,
                                         CUSPARSE_OPERATION_TRANSPOSE, &p->a, &p->b, &p->d, &p->d,
                                         CUSPARSE_COMPUTE_32F));
    rc = init_plan(p, 0);
    if (rc) return rc;
    it = g_plans.emplace(key, p).first;
  }
  *plan_out = it->second;
  *workspace = it->second->workspace;
  *alg = it->second->alg;
  return 0;
}

// Time the plan's algorithms on these operands (cusparseLtMatmulSearch) and keep the fastest, with the split-K
// settings the search chose.
int cslt_search(void* plan, const void* a, const void* b, void* d, void* workspace, void* stream, size_t* ws_out,
                int* alg_out) {
  std::lock_guard<std::mutex> lock(g_mutex);
  Plan* p = (Plan*)plan;
  float alpha = 1.f, beta = 0.f;
  cudaStream_t s = (cudaStream_t)stream;
  CHECK(cusparseLtMatmulSearch(&g_handle, &p->plan, &alpha, a, b, &beta, d, d, workspace, &s, 1));
  int alg = 0;
  CHECK(cusparseLtMatmulAlgGetAttribute(&g_handle, &p->sel, CUSPARSELT_MATMUL_ALG_CONFIG_ID, &alg, sizeof(alg)));
  int split[3];
  for (int i = 0; i < 3; ++i)
    CHECK(cusparseLtMatmulAlgGetAttribute(&g_handle, &p->sel, kSplitAttrs[i], &split[i], sizeof(int)));
  CHECK(cusparseLtMatmulPlanDestroy(&p->plan));
  CHECK(cusparseLtMatmulAlgSelectionDestroy(&p->sel));
  int rc = init_plan(p, alg, split);
  if (rc) return rc;
  *ws_out = p->workspace;
  *alg_out = p->alg;
  return 0;
}

int cslt_matmul(void* plan, const void* a, const void* b, void* d, void* workspace, void* stream) {
  Plan* p = (Plan*)plan;
  float alpha = 1.f, beta = 0.f;
  cudaStream_t s = (cudaStream_t)stream;
  CHECK(cusparseLtMatmul(&g_handle, &p->plan, &alpha, a, b, &beta, d, d, workspace, &s, 1));
  return 0;
}

}  // extern "C"
