// 2:4 small-M matmul on the sparse tensor cores: y (M, N) = x (M, K) @ W^T for M <= 64 tokens, bf16 or int4
// kept values, fp32 accumulation, bf16 out. One `mma.sp.m16n8k32` (PTX ISA §9.7.14.6) multiplies a 16-row
// tile of W (the sparse operand A: 16 kept values per row and k-tile of 32 columns, 2-bit positions as
// metadata) by 32 columns of up to 8 tokens (B), so the tensor cores pick each group's two x values and do
// the multiply-adds; the CUDA cores only move bytes (and, for int4, turn nibbles into bf16).
//
// Weights are read in the fragment order of compress/runtime/mma_layout.py (made once at load time), so a
// lane's operands for 4 k-tiles (one 128-column unit) are 4 (bf16) or 1 (int4) 16-byte loads, each warp-wide
// load 512 contiguous bytes, plus one 16-byte metadata load (256 contiguous bytes: lanes t = 2, 3 of a quad
// read the same words as t = 0, 1):
//   afrag (N/16, K/128, 4, 32, 4) bf16 pairs; qfrag (N/16, K/128, 32, 4) nibbles q+8; efrag (N/16, K/128, 16, 4)
//   metadata words; sfrag (N/16, K/128, 8) pairs of bf16 scales of rows (g, g+8).
// int4 -> bf16: (w >> 4r) & 0x000F000F | 0x43004300 is the bf16 pair 128 + n (exact), minus 136 gives n - 8;
// the integers go through the mma exactly and the unit's group scale is applied to its fp32 partial sums.
//
// One block per R 16-row tiles; its warps split K (unit u to warp u % WARPS) and meet in shared memory at the
// end. B fragments come from x in global memory (L1-cached: every warp of the SM reads the same x); each is
// used for the block's R tiles, so larger M (more B fragments per k-tile) takes larger R.

#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdint.h>

namespace {

// D += A (16 x 32, 2:4, as 16 x 16 kept + metadata) * B (32 x 8); sparsity selector 0: lanes t = 0, 1 of each
// quad hold the metadata. ::ordered_metadata: the two positions of a group are increasing, as format24 stores.
__device__ __forceinline__ void mma_sp(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[4], uint32_t e) {
  asm("mma.sp::ordered_metadata.sync.aligned.m16n8k32.row.col.f32.bf16.bf16.f32 "
      "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9, %10, %11}, {%0, %1, %2, %3}, %12, 0x0;\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "r"(b[2]), "r"(b[3]), "r"(e));
}

// register r of an int4 A fragment: nibbles (q + 8) at bits 4r and 16 + 4r -> the bf16 pair (q0 - 8, q1 - 8)
__device__ __forceinline__ uint32_t int4_pair(uint32_t w, int r) {
  uint32_t v = ((w >> (4 * r)) & 0x000F000Fu) | 0x43004300u;  // bf16 128 + n, exact
  const uint32_t k136 = 0x43084308u;                          // bf16 pair (136, 136)
  __nv_bfloat162 h = __hsub2(*reinterpret_cast<__nv_bfloat162*>(&v), *reinterpret_cast<const __nv_bfloat162*>(&k136));
  return *reinterpret_cast<uint32_t*>(&h);
}

__device__ __forceinline__ uint32_t part(const uint4& v, int i) { return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w; }

template <bool INT4, int NT, int R, int WARPS, int UN>
__global__ void __launch_bounds__(WARPS * 32) mma24_kernel(const uint32_t* __restrict__ x,  // bf16 pairs
                                                           const uint4* __restrict__ a, const uint4* __restrict__ e,
                                                           const uint32_t* __restrict__ s,
                                                           __nv_bfloat16* __restrict__ y, int m, int n, int k) {
  __shared__ float red[WARPS][R][NT][4][32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = lane >> 2, t = lane & 3;
  const int tiles = (n + 15) / 16;
  const int units = k / 128;
  const int xrow = k / 2;  // bf16 pairs per token
  int tile[R];             // this block's R row tiles (clamped: the loads stay in bounds, the stores are guarded)
#pragma unroll
  for (int q = 0; q < R; ++q) tile[q] = min(blockIdx.x * R + q, tiles - 1);
  float acc[R][NT][4] = {};

  for (int u0 = warp; u0 < units; u0 += WARPS * UN) {
    uint4 av[UN][R][INT4 ? 1 : 4], ev[UN][R];
    uint32_t sv[UN][R];
#pragma unroll
    for (int j = 0; j < UN; ++j) {  // all weight loads of UN units first (bytes in flight)
      const int u = u0 + j * WARPS;
      if (u < units) {
#pragma unroll
        for (int q = 0; q < R; ++q) {
          const size_t tu = (size_t)tile[q] * units + u;
          if (INT4) {
            av[j][q][0] = __ldcs(a + tu * 32 + lane);
            sv[j][q] = __ldg(s + tu * 8 + g);
          } else {
#pragma unroll
            for (int kt = 0; kt < 4; ++kt) av[j][q][INT4 ? 0 : kt] = __ldcs(a + (tu * 4 + kt) * 32 + lane);
          }
          ev[j][q] = __ldcs(e + tu * 16 + 2 * g + (t & 1));
        }
      }
    }
#pragma unroll
    for (int j = 0; j < UN; ++j) {
      const int u = u0 + j * WARPS;
      if (u >= units) break;
      float grp[R][NT][4] = {};  // the unit's int4 partial sums, before its group scale
#pragma unroll
      for (int kt = 0; kt < 4; ++kt) {
        const int c = u * 64 + kt * 16 + t;  // pair index of column 2t of this k-tile
#pragma unroll
        for (int i = 0; i < NT; ++i) {
          const int tok = i * 8 + g;
          uint32_t bf[4];  // B fragment: loaded once, used by the R row tiles
#pragma unroll
          for (int r = 0; r < 4; ++r) bf[r] = tok < m ? __ldg(x + (size_t)tok * xrow + c + 4 * r) : 0u;
#pragma unroll
          for (int q = 0; q < R; ++q) {
            uint32_t af[4];
#pragma unroll
            for (int r = 0; r < 4; ++r)
              af[r] = INT4 ? int4_pair(part(av[j][q][0], kt), r) : part(av[j][q][INT4 ? 0 : kt], r);
            mma_sp(INT4 ? grp[q][i] : acc[q][i], af, bf, part(ev[j][q], kt));
          }
        }
      }
      if (INT4) {
#pragma unroll
        for (int q = 0; q < R; ++q) {
          const float s0 = __uint_as_float(sv[j][q] << 16), s1 = __uint_as_float(sv[j][q] & 0xffff0000u);
#pragma unroll
          for (int i = 0; i < NT; ++i) {
            acc[q][i][0] = fmaf(grp[q][i][0], s0, acc[q][i][0]);
            acc[q][i][1] = fmaf(grp[q][i][1], s0, acc[q][i][1]);
            acc[q][i][2] = fmaf(grp[q][i][2], s1, acc[q][i][2]);
            acc[q][i][3] = fmaf(grp[q][i][3], s1, acc[q][i][3]);
          }
        }
      }
    }
  }
#pragma unroll
  for (int q = 0; q < R; ++q)
#pragma unroll
    for (int i = 0; i < NT; ++i)
#pragma unroll
      for (int r = 0; r < 4; ++r) red[warp][q][i][r][lane] = acc[q][i][r];
  __syncthreads();
  for (int idx = threadIdx.x; idx < R * NT * 128; idx += WARPS * 32) {
    const int q = idx / (NT * 128), i = (idx >> 7) % NT, r = (idx >> 5) & 3, l = idx & 31;
    float v = 0.f;
#pragma unroll
    for (int w = 0; w < WARPS; ++w) v += red[w][q][i][r][l];
    const int row = (blockIdx.x * R + q) * 16 + (l >> 2) + 8 * (r >> 1);  // D register layout
    const int tok = i * 8 + 2 * (l & 3) + (r & 1);
    if (row < n && tok < m) y[(size_t)tok * n + row] = __float2bfloat16(v);
  }
}

template <bool INT4, int NT, int R, int WARPS>
cudaError_t launch(const void* x, const void* a, const void* e, const void* s, void* y, int m, int n, int k,
                   cudaStream_t stream) {
  constexpr int UN = (INT4 ? 4 : 2) / R > 0 ? (INT4 ? 4 : 2) / R : 1;
  const int blocks = ((n + 15) / 16 + R - 1) / R;
  mma24_kernel<INT4, NT, R, WARPS, UN><<<blocks, WARPS * 32, 0, stream>>>(
      static_cast<const uint32_t*>(x), static_cast<const uint4*>(a), static_cast<const uint4*>(e),
      static_cast<const uint32_t*>(s), static_cast<__nv_bfloat16*>(y), m, n, k);
  return cudaGetLastError();
}

template <bool INT4, int NT, int R>
cudaError_t by_warps(int warps, const void* x, const void* a, const void* e, const void* s, void* y, int m, int n,
                     int k, cudaStream_t st) {
  switch (warps) {
    case 4: return launch<INT4, NT, R, 4>(x, a, e, s, y, m, n, k, st);
    case 8: return launch<INT4, NT, R, 8>(x, a, e, s, y, m, n, k, st);
    default: return cudaErrorInvalidValue;
  }
}

// R row tiles per block share each B fragment (x is read once per R tiles); R * NT <= 8 keeps the registers
// and the shared reduction buffer (R * NT * 4 KB at 8 warps) in bounds.
template <bool INT4, int NT>
cudaError_t by_rows(int rows, int warps, const void* x, const void* a, const void* e, const void* s, void* y, int m,
                    int n, int k, cudaStream_t st) {
  switch (rows) {
    case 1: return by_warps<INT4, NT, 1>(warps, x, a, e, s, y, m, n, k, st);
    case 2: return NT <= 4 ? by_warps<INT4, NT, (NT <= 4 ? 2 : 1)>(warps, x, a, e, s, y, m, n, k, st) : cudaErrorInvalidValue;
    case 4: return NT <= 2 ? by_warps<INT4, NT, (NT <= 2 ? 4 : 1)>(warps, x, a, e, s, y, m, n, k, st) : cudaErrorInvalidValue;
    default: return cudaErrorInvalidValue;
  }
}

template <bool INT4>
cudaError_t by_m(int rows, int warps, const void* x, const void* a, const void* e, const void* s, void* y, int m, int n,
                 int k, cudaStream_t st) {
  if (m <= 8) return by_rows<INT4, 1>(rows, warps, x, a, e, s, y, m, n, k, st);
  if (m <= 16) return by_rows<INT4, 2>(rows, warps, x, a, e, s, y, m, n, k, st);
  if (m <= 32) return by_rows<INT4, 4>(rows, warps, x, a, e, s, y, m, n, k, st);
  return by_rows<INT4, 8>(rows, warps, x, a, e, s, y, m, n, k, st);
}

__global__ void probe_kernel(const uint32_t* a, const uint32_t* b, const uint32_t* e, float* d) {
  const int lane = threadIdx.x;
  uint32_t af[4], bf[4];
  float acc[4] = {0.f, 0.f, 0.f, 0.f};
  for (int r = 0; r < 4; ++r) af[r] = a[lane * 4 + r], bf[r] = b[lane * 4 + r];
  mma_sp(acc, af, bf, e[lane]);
  for (int r = 0; r < 4; ++r) d[lane * 4 + r] = acc[r];
}

}  // namespace

extern "C" {

// Returns 0 or a cudaError_t. x (m, k) bf16 contiguous, 4-byte aligned; a = afrag (bf16) or qfrag (int4),
// e = efrag, s = sfrag (int4; unused for bf16), 16-byte aligned; 1 <= m <= 64, k % 128 == 0, warps 4 or 8,
// rows (16-row tiles per block) 1, 2 or 4 with rows * ceil(m / 8) <= 8. Launches on `stream` of the current device.
int s24_mma(const void* x, const void* a, const void* e, const void* s, void* y, int m, int n, int k, int int4,
            int warps, int rows, void* stream) {
  if (m < 1 || m > 64 || k % 128 || n < 1) return (int)cudaErrorInvalidValue;
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  return int4 ? (int)by_m<true>(rows, warps, x, a, e, s, y, m, n, k, st)
              : (int)by_m<false>(rows, warps, x, a, e, s, y, m, n, k, st);
}

// One mma.sp of one warp on raw registers: a, b (32 lanes x 4 words), e (32 words) -> d (32 lanes x 4 floats).
// Lets a test check the register layout mma_layout.py assumes against the hardware.
int s24_mma_probe(const void* a, const void* b, const void* e, void* d, void* stream) {
  probe_kernel<<<1, 32, 0, static_cast<cudaStream_t>(stream)>>>(static_cast<const uint32_t*>(a),
                                                               static_cast<const uint32_t*>(b),
                                                               static_cast<const uint32_t*>(e), static_cast<float*>(d));
  return (int)cudaGetLastError();
}

const char* s24_mma_error_string(int code) { return cudaGetErrorString(static_cast<cudaError_t>(code)); }
}
