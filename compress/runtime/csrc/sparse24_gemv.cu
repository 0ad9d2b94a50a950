// 2:4 GEMV for decode (M <= 8 tokens), reading the packed layouts of compress/runtime/format24.py directly:
//   bf16: values (N, K/2) kept values in column order; meta (N, K/32) int32, 2-bit position of kept value t
//         in bits 2*(t%16) of meta[:, t/16];
//   int4: qweight (N, K/16) int32, nibble q+8 of kept value t in bits 4*(t%8); scales (N, K/128) bf16.
// y (M, N) = x (M, K) @ W^T, fp32 accumulation, bf16 out.
//
// Decode is bound by the weight bytes, so the kernel is built around streaming them at full width:
//  * one warp owns R output rows; lane l handles "steps" l, l+32, ... of each row, a step being 16 dense
//    columns for bf16 (one 16-byte load of 8 kept values + the 16-bit half of a metadata word) or 64 dense
//    columns for int4 (one 16-byte load of 32 nibbles + 2 metadata words + 1 scale), so a warp reads 512
//    contiguous bytes per row and instruction; UNROLL steps are loaded before any is used (bytes in flight);
//  * no dense tile is built: for each group of 4 input columns the two kept values are paired with
//    x[4g + p0], x[4g + p1] picked by one byte permute (PRMT) out of the group's 8 bytes of x, the selector
//    computed from the group's 4 metadata bits; bf16 -> fp32 is a shift or a mask;
//  * x (a few KB per token) is staged once per block in shared memory, swizzled so that the lanes' 16-byte
//    reads are free of bank conflicts (read through L1 instead, lanes 32 or 128 bytes apart serialise), and
//    reused for the R rows of the warp; the grid is persistent (as many blocks as fit), each block walking
//    row tiles so x is staged once per block, not once per tile;
//  * int4 values become floats by the 2^23 magic-number trick; the group scale is applied once per step;
//  * lanes reduce with shuffles at the end.
// Built with nvcc on first use (compress/runtime/cuda_decode.py) and called through ctypes on the current
// stream, so it can be captured in CUDA graphs.

#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include <mutex>

namespace {

__device__ __forceinline__ float lo_f(uint32_t v) { return __uint_as_float(v << 16); }
__device__ __forceinline__ float hi_f(uint32_t v) { return __uint_as_float(v & 0xffff0000u); }

// __byte_perm(lo, hi, sel) returns (x[p0], x[p1]) as a bf16 pair when lo/hi hold a group's x[0..1] / x[2..3]
// and sel = 0x1010 + 0x22 * p0 + 0x2200 * p1 (bytes 2p0, 2p0+1, 2p1, 2p1+1); PRMT reads only sel's low 16
// bits. sel2 builds the selectors of two groups at once from their 8 metadata bits (low byte of b): group g's
// in bits 0-15, group g+1's in bits 16-31 (5 integer operations for two groups).
__device__ __forceinline__ uint32_t sel2(uint32_t b) {
  uint32_t z = (b | (b << 12)) & 0x000F000Fu;  // nibble g at bits 0-3, nibble g+1 at bits 16-19
  z = (z | (z << 6)) & 0x03030303u;            // p0(g) @0, p1(g) @8, p0(g+1) @16, p1(g+1) @24
  return z * 0x22u + 0x10101010u;
}

// For each of the 4 groups of a 16-column unit, (x[p0], x[p1]) as a bf16 pair: xa/xb hold the unit's 16 x
// values, meta16 its 16 metadata bits.
__device__ __forceinline__ void x_pairs(uint32_t meta16, uint4 xa, uint4 xb, uint32_t xp[4]) {
  const uint32_t sa = sel2(meta16), sb = sel2(meta16 >> 8);
  xp[0] = __byte_perm(xa.x, xa.y, sa);
  xp[1] = __byte_perm(xa.z, xa.w, sa >> 16);
  xp[2] = __byte_perm(xb.x, xb.y, sb);
  xp[3] = __byte_perm(xb.z, xb.w, sb >> 16);
}

// sum over the 4 groups of one 16-column unit of v0 * x[p0] + v1 * x[p1]
__device__ __forceinline__ float unit_bf16(uint4 v, uint32_t meta16, uint4 xa, uint4 xb) {
  uint32_t xp[4];
  x_pairs(meta16, xa, xb, xp);
  const uint32_t w[4] = {v.x, v.y, v.z, v.w};
  float acc = 0.f;
#pragma unroll
  for (int g = 0; g < 4; ++g) {
    acc = fmaf(lo_f(w[g]), lo_f(xp[g]), acc);
    acc = fmaf(hi_f(w[g]), hi_f(xp[g]), acc);
  }
  return acc;
}

// int4: sum over the 4 groups of one unit of (q0 - 8) * x[p0] + (q1 - 8) * x[p1] (unscaled). Group g's nibbles
// are byte g of q: low nibble = first kept value. Each nibble becomes 2^23 + nibble by one PRMT into the
// exponent byte 0x4B (the 2^23 magic number), then one FADD subtracts 2^23 + 8.
__device__ __forceinline__ float unit_int4(uint32_t q, uint32_t meta16, uint4 xa, uint4 xb) {
  uint32_t xp[4];
  x_pairs(meta16, xa, xb, xp);
  const uint32_t lo = q & 0x0F0F0F0Fu, hi = (q >> 4) & 0x0F0F0F0Fu;
  float acc = 0.f;
#pragma unroll
  for (int g = 0; g < 4; ++g) {
    const float v0 = __uint_as_float(__byte_perm(lo, 0x4B000000u, 0x7440u + g)) - 8388616.f;
    const float v1 = __uint_as_float(__byte_perm(hi, 0x4B000000u, 0x7440u + g)) - 8388616.f;
    acc = fmaf(v0, lo_f(xp[g]), acc);
    acc = fmaf(v1, hi_f(xp[g]), acc);
  }
  return acc;
}

// x chunk c (16 bytes, 8 columns) of a token sits at chunk c ^ ((c >> 3) & 7) of its shared-memory row: the
// 8 lanes of a 128-bit access phase then hit 8 different bank groups both for bf16 steps (lane stride 2 chunks)
// and int4 steps (lane stride 8 chunks). Needs K % 64 == 0.
__device__ __forceinline__ int swz(int c) { return c ^ ((c >> 3) & 7); }

template <int MT, int R, bool INT4, int UNROLL, bool SMEM>
__global__ void __launch_bounds__(256) gemv24_kernel(const __nv_bfloat16* __restrict__ x,
                                                     const uint4* __restrict__ w,
                                                     const __nv_bfloat16* __restrict__ scales,
                                                     const void* __restrict__ meta, __nv_bfloat16* __restrict__ y,
                                                     int m, int n, int k) {
  extern __shared__ uint4 xsh[];  // SMEM: (MT, K/8) swizzled
  const int lane = threadIdx.x & 31;
  constexpr int COLS = INT4 ? 64 : 16;  // dense columns per step
  const int steps = k / COLS;           // steps per row = uint4 words of w per row
  const uint4* xv = reinterpret_cast<const uint4*>(x);
  const int xrow = k / 8;  // uint4 words per token of x
  if (SMEM) {  // stage x once per block; the block then walks row tiles (grid-stride)
    for (int i = threadIdx.x; i < MT * xrow; i += blockDim.x) {
      const int t = i / xrow, c = i - t * xrow;
      xsh[t * xrow + swz(c)] = t < m ? __ldg(xv + t * xrow + c) : make_uint4(0, 0, 0, 0);
    }
    __syncthreads();
  }
  const int warps = blockDim.x >> 5;
  for (int row0 = (blockIdx.x * warps + (threadIdx.x >> 5)) * R; row0 < n; row0 += gridDim.x * warps * R) {
    int rows[R];
#pragma unroll
    for (int r = 0; r < R; ++r) rows[r] = min(row0 + r, n - 1);  // clamped; stores are guarded

    float acc[R][MT];
#pragma unroll
    for (int r = 0; r < R; ++r)
#pragma unroll
      for (int t = 0; t < MT; ++t) acc[r][t] = 0.f;

    for (int s0 = lane; s0 < steps; s0 += 32 * UNROLL) {
      uint4 wv[UNROLL][R];
      uint2 mv[UNROLL][R];  // bf16: .x holds the 16-bit half; int4: both words
      float sv[UNROLL][R];
#pragma unroll
      for (int u = 0; u < UNROLL; ++u) {
        const int s = s0 + 32 * u;
#pragma unroll
        for (int r = 0; r < R; ++r) {
          if (s < steps) {
            wv[u][r] = __ldcs(w + (size_t)rows[r] * steps + s);
            if (INT4) {
              mv[u][r] = __ldcs(reinterpret_cast<const uint2*>(meta) + (size_t)rows[r] * steps + s);
              sv[u][r] = __bfloat162float(scales[(size_t)rows[r] * (steps / 2) + s / 2]);
            } else {
              mv[u][r].x = __ldcs(reinterpret_cast<const unsigned short*>(meta) + (size_t)rows[r] * steps + s);
            }
          }
        }
      }
#pragma unroll
      for (int u = 0; u < UNROLL; ++u) {
        const int s = s0 + 32 * u;
        if (s >= steps) break;
#pragma unroll
        for (int t = 0; t < MT; ++t) {
          if (t >= m) break;
          const int c0 = s * (COLS / 8);  // first x chunk of this step
          auto xchunk = [&](int c) { return SMEM ? xsh[t * xrow + swz(c)] : __ldg(xv + (size_t)t * xrow + c); };
          if (INT4) {
#pragma unroll
            for (int i = 0; i < 4; ++i) {  // 4 units of 16 columns
              const uint4 xa = xchunk(c0 + 2 * i), xb = xchunk(c0 + 2 * i + 1);
#pragma unroll
              for (int r = 0; r < R; ++r) {
                const uint32_t q = i == 0 ? wv[u][r].x : i == 1 ? wv[u][r].y : i == 2 ? wv[u][r].z : wv[u][r].w;
                const uint32_t mw = i < 2 ? mv[u][r].x : mv[u][r].y;
                acc[r][t] = fmaf(unit_int4(q, (mw >> (16 * (i & 1))) & 0xffffu, xa, xb), sv[u][r], acc[r][t]);
              }
            }
          } else {
            const uint4 xa = xchunk(c0), xb = xchunk(c0 + 1);
#pragma unroll
            for (int r = 0; r < R; ++r) acc[r][t] += unit_bf16(wv[u][r], mv[u][r].x, xa, xb);
          }
        }
      }
    }
#pragma unroll
    for (int r = 0; r < R; ++r)
#pragma unroll
      for (int t = 0; t < MT; ++t) {
        float v = acc[r][t];
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
        if (lane == 0 && t < m && row0 + r < n) y[(size_t)t * n + row0 + r] = __float2bfloat16(v);
      }
  }
}

template <int MT, int R, bool INT4, bool SMEM>
cudaError_t launch(const void* x, const void* w, const void* s, const void* meta, void* y, int m, int n, int k,
                   int warps, cudaStream_t stream) {
  constexpr int UNROLL = INT4 ? 2 : 4;
  auto kernel = gemv24_kernel<MT, R, INT4, UNROLL, SMEM>;
  const int rows_per_block = warps * R;
  int blocks = (n + rows_per_block - 1) / rows_per_block;
  const size_t smem = SMEM ? (size_t)MT * k * 2 : 0;
  if (SMEM) {  // a persistent grid: as many blocks as fit at once, each staging x once
    // blocks resident per device, cached per (device, warps, shared memory): the queries cost host time
    struct Fit { int dev, warps; size_t smem; int blocks; };
    static Fit fits[32];
    static int n_fits = 0;
    static std::mutex lock;
    int dev = 0;
    cudaError_t e = cudaGetDevice(&dev);
    if (e != cudaSuccess) return e;
    int resident = 0;
    {
      std::lock_guard<std::mutex> guard(lock);
      for (int i = 0; i < n_fits; ++i)
        if (fits[i].dev == dev && fits[i].warps == warps && fits[i].smem == smem) resident = fits[i].blocks;
      if (!resident) {
        if (smem > 48 * 1024) {  // opt in to more than 48 KB (per device: the attribute is per context)
          e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
          if (e != cudaSuccess) return e;
        }
        int sms = 0, per_sm = 0;
        e = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
        if (e != cudaSuccess) return e;
        e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, warps * 32, smem);
        if (e != cudaSuccess) return e;
        if (per_sm < 1) return cudaErrorInvalidConfiguration;
        resident = sms * per_sm;
        if (n_fits < 32) fits[n_fits++] = Fit{dev, warps, smem, resident};
      }
    }
    blocks = min(blocks, resident);
  }
  kernel<<<blocks, warps * 32, smem, stream>>>(static_cast<const __nv_bfloat16*>(x), static_cast<const uint4*>(w),
                                              static_cast<const __nv_bfloat16*>(s), meta,
                                              static_cast<__nv_bfloat16*>(y), m, n, k);
  return cudaGetLastError();
}

template <int MT, bool INT4, bool SMEM>
cudaError_t by_rows(int rows, const void* x, const void* w, const void* s, const void* meta, void* y, int m, int n,
                    int k, int warps, cudaStream_t st) {
  switch (rows) {
    case 1: return launch<MT, 1, INT4, SMEM>(x, w, s, meta, y, m, n, k, warps, st);
    case 2: return launch<MT, 2, INT4, SMEM>(x, w, s, meta, y, m, n, k, warps, st);
    case 4: return launch<MT, 4, INT4, SMEM>(x, w, s, meta, y, m, n, k, warps, st);
    default: return cudaErrorInvalidValue;
  }
}

template <bool INT4, bool SMEM>
cudaError_t by_m(int rows, const void* x, const void* w, const void* s, const void* meta, void* y, int m, int n, int k,
                 int warps, cudaStream_t st) {
  if (m <= 1) return by_rows<1, INT4, SMEM>(rows, x, w, s, meta, y, m, n, k, warps, st);
  if (m <= 2) return by_rows<2, INT4, SMEM>(rows, x, w, s, meta, y, m, n, k, warps, st);
  if (m <= 4) return by_rows<4, INT4, SMEM>(rows, x, w, s, meta, y, m, n, k, warps, st);
  if (m <= 8) return by_rows<8, INT4, SMEM>(rows, x, w, s, meta, y, m, n, k, warps, st);
  return cudaErrorInvalidValue;
}

}  // namespace

extern "C" {

// Returns 0 or a cudaError_t. x (m, k) bf16 contiguous; bf16: w = values, s unused; int4: w = qweight, s = scales.
// Needs k % 64 == 0 (bf16) or k % 128 == 0 (int4), 16-byte aligned pointers, 1 <= m <= 8, rows in {1, 2, 4},
// 1 <= warps <= 8; smem = 1 stages x in shared memory (persistent grid; falls back to 0 when M*K*2 bytes exceed
// the device's per-block shared memory), 0 reads it through L1. Launches on `stream` of the current device.
int s24_gemv(const void* x, const void* w, const void* s, const void* meta, void* y, int m, int n, int k, int int4,
             int rows, int warps, int smem, void* stream) {
  if (warps < 1 || warps > 8 || m < 1 || m > 8 || k % (int4 ? 128 : 64)) return (int)cudaErrorInvalidValue;
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  if (smem) {  // x must fit in one block's shared memory (M rounded up to the template's 1, 2, 4 or 8)
    const int mt = m <= 1 ? 1 : m <= 2 ? 2 : m <= 4 ? 4 : 8;
    int dev = 0, optin = 0;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) != cudaSuccess ||
        (size_t)mt * k * 2 > (size_t)optin)
      smem = 0;  // read x through L1 instead
  }
  if (smem)
    return int4 ? (int)by_m<true, true>(rows, x, w, s, meta, y, m, n, k, warps, st)
                : (int)by_m<false, true>(rows, x, w, s, meta, y, m, n, k, warps, st);
  return int4 ? (int)by_m<true, false>(rows, x, w, s, meta, y, m, n, k, warps, st)
              : (int)by_m<false, false>(rows, x, w, s, meta, y, m, n, k, warps, st);
}

const char* s24_error_string(int code) { return cudaGetErrorString(static_cast<cudaError_t>(code)); }
}
