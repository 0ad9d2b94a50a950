// 2:4 small-M matmul on the sparse tensor cores: y (M, N) = x (M, K) @ W^T for M <= 64 tokens, bf16 or int4
// kept values, fp32 accumulation, bf16 out. One `mma.sp.m16n8k32` (PTX ISA §9.7.14.6) multiplies a 16-row
// tile of W (the sparse operand A: 16 kept values per row and k-tile of 32 columns, 2-bit positions as
// metadata) by 32 columns of up to 8 tokens (B), so the tensor cores pick each group's two x values and do
// the multiply-adds; the CUDA cores only move bytes (and, for int4, turn nibbles into bf16).
//
// The weight is read in its one resident form (issue 16), no copy: the kept values row-major — bf16 `values`
// (N, K/2), which are the head of cuSPARSELt's compressed form, or int4 `qweight` (N, K/16) nibbles q+8 — and
// the metadata in cuSPARSELt's order (compress/runtime/cslt_layout.py: per 64-row x 32-column block, the 8
// bytes of rows r and r+8 hold their 16 group fields, nibble r3 | j2<<1 | j0<<2 | j1<<3 for group j).
// The mma's 8 group slots of k-tile kt of a 128-column unit are slot s = group 2kt + s/4 of block s%4 (the
// product is the same whichever groups a tile holds, as long as A, B and the metadata agree; mma_layout.py
// emulates this arithmetic for the CPU tests): lane (g, t)'s A registers for the unit's 4 k-tiles (slots t and
// t+4, PTX's fragment layout) are then the 8 groups of block t — 32 contiguous bytes of a bf16 row, two 16-byte
// loads, or 8 bytes of int4 nibbles — and its metadata word (lanes t = 0, 1: slots 4t..4t+3 of rows g, g+8)
// is one byte of each block's row-pair metadata, byte-permuted side by side with the nibbles unzipped.
// int4 -> bf16: (w >> 4r) & 0x000F000F | 0x43004300 is the bf16 pair 128 + n (exact), minus 136 gives n - 8;
// the integers go through the mma exactly and the 128-column unit's group scale is applied to its fp32
// partial sums.
//
// One block per R 16-row tiles; its warps split K (unit u of 128 columns to warp u % WARPS) and meet in shared
// memory at the end. B fragments come from x in global memory (L1-cached: every warp of the SM reads the same
// x); each is used for the block's R tiles, so larger M (more B fragments per k-tile) takes larger R.

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

// Lane t's mma metadata word for k-tile kt from the unit's 4 blocks' row-pair metadata (8 bytes each): row g's
// fields of slots 0..3 (group 2kt + t of blocks 0..3) in bits 0-15, row g+8's in bits 16-31 (t = 0, 1). That
// group's two fields (rows g, g+8: low, high nibble) are byte (kt >> 1) + 2t of word kt & 1 of each block.
__device__ __forceinline__ uint32_t meta_word(const uint2 (&c)[4], int kt, int t) {
  const uint32_t p = (kt >> 1) + 2 * (t & 1), sel = p | ((p + 4) << 4);
  const uint32_t w0 = kt & 1 ? c[0].y : c[0].x, w1 = kt & 1 ? c[1].y : c[1].x;
  const uint32_t w2 = kt & 1 ? c[2].y : c[2].x, w3 = kt & 1 ? c[3].y : c[3].x;
  const uint32_t x = __byte_perm(__byte_perm(w0, w1, sel), __byte_perm(w2, w3, sel), 0x5410);
  const uint32_t e = x & 0x0F0F0F0Fu, o = (x >> 4) & 0x0F0F0F0Fu;  // row g's fields; row g+8's
  return __byte_perm(e | (e >> 4), o | (o >> 4), 0x6420);
}

// One lane's weight operands of one (16-row tile, 128-column unit): bf16 rows g, g+8 x the 32 bytes of block t
// (two 16-byte halves), or int4 rows g, g+8 x its 8 bytes and the unit's two scales; and the row pair's
// metadata of the unit's 4 blocks (64-row tile at 32 words of 8 bytes, row pair g + 8 (tile & 3)).
template <bool INT4> struct UnitA;
template <> struct UnitA<false> { uint4 v[2][2]; uint2 e[4]; float s[2]; };
template <> struct UnitA<true> { uint2 v[2]; uint2 e[4]; float s[2]; };

template <bool INT4>
__device__ __forceinline__ void load_a(UnitA<INT4>& a, const uint32_t* __restrict__ w, const uint2* __restrict__ e,
                                       const __nv_bfloat16* __restrict__ s, int tile, int u, int g, int t, int k) {
  const size_t r0 = (size_t)tile * 16 + g, r1 = r0 + 8;
  if constexpr (INT4) {
    const int wrow = k / 16, units = k / 128;
    a.v[0] = __ldcs(reinterpret_cast<const uint2*>(w + r0 * wrow + u * 8 + 2 * t));
    a.v[1] = __ldcs(reinterpret_cast<const uint2*>(w + r1 * wrow + u * 8 + 2 * t));
    a.s[0] = __bfloat162float(s[r0 * units + u]);
    a.s[1] = __bfloat162float(s[r1 * units + u]);
  } else {
    const int wrow = k / 4;
    const uint4* a0 = reinterpret_cast<const uint4*>(w + r0 * wrow + u * 32 + 8 * t);
    const uint4* a1 = reinterpret_cast<const uint4*>(w + r1 * wrow + u * 32 + 8 * t);
    a.v[0][0] = __ldcs(a0), a.v[0][1] = __ldcs(a0 + 1);
    a.v[1][0] = __ldcs(a1), a.v[1][1] = __ldcs(a1 + 1);
  }
  const uint2* eb = e + ((size_t)(tile >> 2) * (k / 32) + u * 4) * 32 + g + 8 * (tile & 3);
#pragma unroll
  for (int b = 0; b < 4; ++b) a.e[b] = __ldcs(eb + b * 32);
}

// k-tile kt's A registers and metadata word from one unit's operands (groups 2kt, 2kt+1 of block t)
template <bool INT4>
__device__ __forceinline__ void a_frag(const UnitA<INT4>& a, int kt, int t, uint32_t (&af)[4], uint32_t& em) {
  em = meta_word(a.e, kt, t);
  if constexpr (INT4) {  // the 16-bit half kt & 1 of word kt >> 1, spread for int4_pair
    const uint32_t h0 = ((kt >> 1 ? a.v[0].y : a.v[0].x) >> (16 * (kt & 1))) & 0xFFFFu;
    const uint32_t h1 = ((kt >> 1 ? a.v[1].y : a.v[1].x) >> (16 * (kt & 1))) & 0xFFFFu;
    const uint32_t s0 = h0 | (h0 << 12), s1 = h1 | (h1 << 12);
    af[0] = int4_pair(s0, 0), af[1] = int4_pair(s1, 0), af[2] = int4_pair(s0, 2), af[3] = int4_pair(s1, 2);
  } else {  // words 2kt, 2kt+1 of block t's 8
    const uint4& v0 = a.v[0][kt >> 1];
    const uint4& v1 = a.v[1][kt >> 1];
    af[0] = kt & 1 ? v0.z : v0.x, af[2] = kt & 1 ? v0.w : v0.y;
    af[1] = kt & 1 ? v1.z : v1.x, af[3] = kt & 1 ? v1.w : v1.y;
  }
}

template <bool INT4, int NT, int R, int WARPS, int UN>
__global__ void __launch_bounds__(WARPS * 32) mma24_kernel(const uint32_t* __restrict__ x,  // bf16 pairs
                                                           const uint32_t* __restrict__ w,  // values / qweight
                                                           const uint2* __restrict__ e,     // metadata words
                                                           const __nv_bfloat16* __restrict__ s,  // int4 scales
                                                           __nv_bfloat16* __restrict__ y, int m, int n, int k) {
  __shared__ float red[WARPS][R][NT][4][32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = lane >> 2, t = lane & 3;
  const int tiles = n / 16;
  const int units = k / 128;
  const int xrow = k / 2;  // bf16 pairs per token
  int tile[R];  // this block's R row tiles (clamped: the loads stay in bounds, the stores are guarded)
#pragma unroll
  for (int q = 0; q < R; ++q) tile[q] = min(blockIdx.x * R + q, tiles - 1);
  float acc[R][NT][4] = {};

  for (int u0 = warp; u0 < units; u0 += WARPS * UN) {
    UnitA<INT4> ua[UN][R];
#pragma unroll
    for (int j = 0; j < UN; ++j) {  // all weight loads of UN units first (bytes in flight)
      const int u = u0 + j * WARPS;
      if (u < units) {
#pragma unroll
        for (int q = 0; q < R; ++q) load_a<INT4>(ua[j][q], w, e, s, tile[q], u, g, t, k);
      }
    }
#pragma unroll
    for (int j = 0; j < UN; ++j) {
      const int u = u0 + j * WARPS;
      if (u >= units) break;
      float grp[R][NT][4] = {};  // the unit's int4 partial sums, before its group scale
#pragma unroll
      for (int kt = 0; kt < 4; ++kt) {
        uint32_t af[R][4], em[R];
#pragma unroll
        for (int q = 0; q < R; ++q) a_frag<INT4>(ua[j][q], kt, t, af[q], em[q]);
        // B: tile column 2t + 8r (+1) is slot 2r + t/2 = group 2kt + r/2 of block (2r + t/2) % 4, position 2(t&1)
        const int c = u * 64 + 16 * (t >> 1) + (t & 1) + 4 * kt;
#pragma unroll
        for (int i = 0; i < NT; ++i) {
          const int tok = i * 8 + g;
          uint32_t bf[4];  // B fragment: loaded once, used by the R row tiles
          const uint32_t* xr = x + (size_t)tok * xrow + c;
          bf[0] = tok < m ? __ldg(xr) : 0u;
          bf[1] = tok < m ? __ldg(xr + 32) : 0u;
          bf[2] = tok < m ? __ldg(xr + 2) : 0u;
          bf[3] = tok < m ? __ldg(xr + 34) : 0u;
#pragma unroll
          for (int q = 0; q < R; ++q) mma_sp(INT4 ? grp[q][i] : acc[q][i], af[q], bf, em[q]);
        }
      }
      if (INT4) {
#pragma unroll
        for (int q = 0; q < R; ++q) {
          const float s0 = ua[j][q].s[0], s1 = ua[j][q].s[1];
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

// The tiled variant for M = 9..64 (issue 16): the small-M kernel above re-reads x's fragments from L2 for every
// 16-row tile, so past M = 16 it is bound by those reads, not by the weight bytes. Here a block's WARPS * TPW
// row tiles (each warp its own TPW) share one copy of x's 128-column unit, staged in shared memory in the
// fragments' order: lane (g, t)'s four B words of k-tile kt (x pairs b, b + 32, b + 2, b + 34 with
// b = 16 (t >> 1) + (t & 1) + 4 kt, as in the kernel above) sit in one 16-byte chunk, slot 4 kt + t, stored
// at [b, b + 2, b + 32, b + 34] — so a fragment is one 16-byte shared load — and the slot index is XORed with
// 4 on odd tokens, which keeps the 8 lanes of a load phase on distinct banks. Pair p = 4c + d of the unit
// (chunk c of its 256 bytes, d = 0..3) goes to slot 4 (c & 3) + 2 ((c >> 2) & 1) + (d & 1), position
// 2 (c >> 3) + (d >> 1). The weight loads per (tile, unit) are the small-M kernel's (load_a), one unit ahead.
// Split-K over gridDim.y fills the GPU when N / 16 / (WARPS * TPW) blocks are too few: each split writes fp32
// partial sums to a workspace, and the last split to finish a row block (a counter per row block, which it
// resets for the next call) adds them in split order (deterministic) and writes bf16. At most 128 registers per
// thread (launch bounds: 16 warps per SM): Nsight Compute showed the unbounded build (154 registers) at one block
// of 8 warps per SM, waiting on memory latency (12.5% occupancy, 26% memory throughput at M = 64).
template <bool INT4, int NT, int WARPS, int TPW>
__global__ void __launch_bounds__(WARPS * 32, 512 / (WARPS * 32)) mma24_tiled(const uint32_t* __restrict__ x,
                                                          const uint32_t* __restrict__ w,
                                                          const uint2* __restrict__ e,
                                                          const __nv_bfloat16* __restrict__ s,
                                                          __nv_bfloat16* __restrict__ y, float* __restrict__ ws,
                                                          int* __restrict__ counters, int m, int n, int k) {
  constexpr int BT = WARPS * TPW;           // row tiles per block
  constexpr int XCH = NT * 8 * 16;          // 16-byte chunks of x per unit (NT * 8 tokens x 256 bytes)
  constexpr int XPT = (XCH + WARPS * 32 - 1) / (WARPS * 32);
  __shared__ uint4 xs[2][NT * 8][16];
  __shared__ int last;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = lane >> 2, t = lane & 3;
  const int tiles = n / 16, units = k / 128, xrow = k / 2;
  const int splits = gridDim.y, split = blockIdx.y, rb = blockIdx.x;
  const int u_begin = (int)((long)units * split / splits), u_end = (int)((long)units * (split + 1) / splits);
  int tile[TPW];
#pragma unroll
  for (int q = 0; q < TPW; ++q) tile[q] = min(rb * BT + warp * TPW + q, tiles - 1);
  float acc[TPW][NT][4] = {};
  UnitA<INT4> a[TPW], an[TPW];
  uint4 xr[XPT];

  auto load_x = [&](int u) {
#pragma unroll
    for (int i = 0; i < XPT; ++i) {
      const int idx = threadIdx.x + i * WARPS * 32, tok = idx >> 4;
      xr[i] = make_uint4(0u, 0u, 0u, 0u);
      if (idx < XCH && tok < m) xr[i] = __ldg(reinterpret_cast<const uint4*>(x + (size_t)tok * xrow + u * 64) + (idx & 15));
    }
  };
  auto store_x = [&](int st) {
#pragma unroll
    for (int i = 0; i < XPT; ++i) {
      const int idx = threadIdx.x + i * WARPS * 32;
      if (idx >= XCH) break;
      const int tok = idx >> 4, c = idx & 15, sw = (tok & 1) << 2;
      const int s0 = 4 * (c & 3) + 2 * ((c >> 2) & 1), half = c >> 3;
      uint2* row = reinterpret_cast<uint2*>(xs[st][tok]);
      row[2 * (s0 ^ sw) + half] = make_uint2(xr[i].x, xr[i].z);
      row[2 * ((s0 + 1) ^ sw) + half] = make_uint2(xr[i].y, xr[i].w);
    }
  };

  if (u_begin < u_end) {
#pragma unroll
    for (int q = 0; q < TPW; ++q) load_a<INT4>(a[q], w, e, s, tile[q], u_begin, g, t, k);
    load_x(u_begin);
  }
  int st = 0;
  for (int u = u_begin; u < u_end; ++u) {
    store_x(st);
    __syncthreads();
    if (u + 1 < u_end) {  // the next unit's bytes in flight while this one computes
#pragma unroll
      for (int q = 0; q < TPW; ++q) load_a<INT4>(an[q], w, e, s, tile[q], u + 1, g, t, k);
      load_x(u + 1);
    }
    float grp[TPW][NT][4] = {};
#pragma unroll
    for (int kt = 0; kt < 4; ++kt) {
      uint32_t af[TPW][4], em[TPW];
#pragma unroll
      for (int q = 0; q < TPW; ++q) a_frag<INT4>(a[q], kt, t, af[q], em[q]);
#pragma unroll
      for (int i = 0; i < NT; ++i) {
        const uint4 v = xs[st][i * 8 + g][(4 * kt + t) ^ ((g & 1) << 2)];
        const uint32_t bf[4] = {v.x, v.z, v.y, v.w};
#pragma unroll
        for (int q = 0; q < TPW; ++q) mma_sp(INT4 ? grp[q][i] : acc[q][i], af[q], bf, em[q]);
      }
    }
    if (INT4) {
#pragma unroll
      for (int q = 0; q < TPW; ++q)
#pragma unroll
        for (int i = 0; i < NT; ++i)
#pragma unroll
          for (int r = 0; r < 4; ++r) acc[q][i][r] = fmaf(grp[q][i][r], a[q].s[r >> 1], acc[q][i][r]);
    }
#pragma unroll
    for (int q = 0; q < TPW; ++q) a[q] = an[q];
    st ^= 1;
  }

  // D register layout: row tile * 16 + g + 8 (r >> 1), token i * 8 + 2t + (r & 1)
  float* part = splits > 1 ? ws + (size_t)split * m * n : nullptr;
#pragma unroll
  for (int q = 0; q < TPW; ++q) {
    const int tq = rb * BT + warp * TPW + q;
    if (tq >= tiles) continue;
#pragma unroll
    for (int i = 0; i < NT; ++i)
#pragma unroll
      for (int r = 0; r < 4; ++r) {
        const int row = tq * 16 + g + 8 * (r >> 1), tok = i * 8 + 2 * t + (r & 1);
        if (tok >= m) continue;
        if (part) part[(size_t)tok * n + row] = acc[q][i][r];
        else y[(size_t)tok * n + row] = __float2bfloat16(acc[q][i][r]);
      }
  }
  if (!part) return;
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) last = atomicAdd(&counters[rb], 1) == splits - 1;
  __syncthreads();
  if (!last) return;
  __threadfence();
  const int r0 = rb * BT * 16, nr = min(BT * 16, n - r0);
  for (int idx = threadIdx.x; idx < m * nr; idx += WARPS * 32) {
    const int tok = idx / nr, row = r0 + idx % nr;
    float v = 0.f;
    for (int sp = 0; sp < splits; ++sp) v += __ldcg(ws + ((size_t)sp * m + tok) * n + row);
    y[(size_t)tok * n + row] = __float2bfloat16(v);
  }
  if (threadIdx.x == 0) counters[rb] = 0;  // ready for the next call (stream order)
}

template <bool INT4, int NT, int WARPS, int TPW>
cudaError_t launch_tiled(const void* x, const void* a, const void* e, const void* s, void* y, void* ws, void* cnt,
                         int m, int n, int k, int splits, cudaStream_t stream) {
  const dim3 grid((n / 16 + WARPS * TPW - 1) / (WARPS * TPW), splits);
  mma24_tiled<INT4, NT, WARPS, TPW><<<grid, WARPS * 32, 0, stream>>>(
      static_cast<const uint32_t*>(x), static_cast<const uint32_t*>(a), static_cast<const uint2*>(e),
      static_cast<const __nv_bfloat16*>(s), static_cast<__nv_bfloat16*>(y), static_cast<float*>(ws),
      static_cast<int*>(cnt), m, n, k);
  return cudaGetLastError();
}

template <bool INT4, int NT>
cudaError_t tiled_by_shape(int warps, int tpw, const void* x, const void* a, const void* e, const void* s, void* y,
                           void* ws, void* cnt, int m, int n, int k, int splits, cudaStream_t st) {
  if (warps == 4 && tpw == 1) return launch_tiled<INT4, NT, 4, 1>(x, a, e, s, y, ws, cnt, m, n, k, splits, st);
  if (warps == 4 && tpw == 2) return launch_tiled<INT4, NT, 4, 2>(x, a, e, s, y, ws, cnt, m, n, k, splits, st);
  if (warps == 8 && tpw == 1) return launch_tiled<INT4, NT, 8, 1>(x, a, e, s, y, ws, cnt, m, n, k, splits, st);
  if (warps == 8 && tpw == 2) return launch_tiled<INT4, NT, 8, 2>(x, a, e, s, y, ws, cnt, m, n, k, splits, st);
  return cudaErrorInvalidValue;
}

template <bool INT4>
cudaError_t tiled_by_m(int warps, int tpw, const void* x, const void* a, const void* e, const void* s, void* y,
                       void* ws, void* cnt, int m, int n, int k, int splits, cudaStream_t st) {
  if (m <= 16) return tiled_by_shape<INT4, 2>(warps, tpw, x, a, e, s, y, ws, cnt, m, n, k, splits, st);
  if (m <= 32) return tiled_by_shape<INT4, 4>(warps, tpw, x, a, e, s, y, ws, cnt, m, n, k, splits, st);
  return tiled_by_shape<INT4, 8>(warps, tpw, x, a, e, s, y, ws, cnt, m, n, k, splits, st);
}

template <bool INT4, int NT, int R, int WARPS>
cudaError_t launch(const void* x, const void* a, const void* e, const void* s, void* y, int m, int n, int k,
                   cudaStream_t stream) {
  constexpr int UN = (INT4 ? 4 : 2) / R > 0 ? (INT4 ? 4 : 2) / R : 1;
  const int blocks = (n / 16 + R - 1) / R;
  mma24_kernel<INT4, NT, R, WARPS, UN><<<blocks, WARPS * 32, 0, stream>>>(
      static_cast<const uint32_t*>(x), static_cast<const uint32_t*>(a), static_cast<const uint2*>(e),
      static_cast<const __nv_bfloat16*>(s), static_cast<__nv_bfloat16*>(y), m, n, k);
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

// int4 kept values -> bf16 kept values (the values section of a cuSPARSELt compressed form, for prefill):
// thread i turns qweight word i (8 nibbles q+8 of one row) into 8 bf16 (q - 8) * scale, one 16-byte store.
__global__ void int4_values_kernel(const uint32_t* __restrict__ q, const __nv_bfloat16* __restrict__ s,
                                   uint4* __restrict__ out, long words, int row_words, int groups) {
  const long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= words) return;
  const uint32_t w = q[i];
  const long row = i / row_words;
  const float sc = __bfloat162float(s[row * groups + (i % row_words) / 8]);  // 8 words = 64 kept = 128 columns
  uint32_t o[4];
#pragma unroll
  for (int p = 0; p < 4; ++p) {
    const float a = (float)((int)((w >> (8 * p)) & 15) - 8) * sc, b = (float)((int)((w >> (8 * p + 4)) & 15) - 8) * sc;
    __nv_bfloat162 h = __floats2bfloat162_rn(a, b);
    o[p] = *reinterpret_cast<uint32_t*>(&h);
  }
  out[i] = make_uint4(o[0], o[1], o[2], o[3]);
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

// Returns 0 or a cudaError_t. x (m, k) bf16 contiguous, 4-byte aligned; a = values (N, K/2) bf16 or qweight
// (N, K/16) int32 (int4), e = cuSPARSELt-order metadata (cslt_layout.meta_bytes(N, K)), s = scales (N, K/128)
// bf16 (int4; unused for bf16), 16-byte aligned; 1 <= m <= 64, n % 16 == 0, k % 128 == 0, warps 4 or 8,
// rows (16-row tiles per block) 1, 2 or 4 with rows * ceil(m / 8) <= 8. Launches on `stream` of the current device.
int s24_mma(const void* x, const void* a, const void* e, const void* s, void* y, int m, int n, int k, int int4,
            int warps, int rows, void* stream) {
  if (m < 1 || m > 64 || k % 128 || n < 16 || n % 16) return (int)cudaErrorInvalidValue;
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  return int4 ? (int)by_m<true>(rows, warps, x, a, e, s, y, m, n, k, st)
              : (int)by_m<false>(rows, warps, x, a, e, s, y, m, n, k, st);
}

// The tiled variant (M = 1..64; it is tuned for 9..64): operands as s24_mma, warps 4 or 8, tpw (16-row tiles
// per warp) 1 or 2, splits (of K, gridDim.y) 1..16; splits > 1 needs ws (splits * m * n fp32) and counters
// (n_counters >= row blocks = ceil(n / 16 / (warps * tpw)) ints, zero before the first call; every call leaves
// them zero).
int s24_mma_tiled(const void* x, const void* a, const void* e, const void* s, void* y, void* ws, void* counters,
                  int n_counters, int m, int n, int k, int int4, int warps, int tpw, int splits, void* stream) {
  if (m < 1 || m > 64 || k % 128 || n < 16 || n % 16 || splits < 1 || splits > 16) return (int)cudaErrorInvalidValue;
  if (splits > 1 && (!ws || !counters || n_counters < (n / 16 + warps * tpw - 1) / (warps * tpw)))
    return (int)cudaErrorInvalidValue;
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  return int4 ? (int)tiled_by_m<true>(warps, tpw, x, a, e, s, y, ws, counters, m, n, k, splits, st)
              : (int)tiled_by_m<false>(warps, tpw, x, a, e, s, y, ws, counters, m, n, k, splits, st);
}

// One mma.sp of one warp on raw registers: a, b (32 lanes x 4 words), e (32 words) -> d (32 lanes x 4 floats).
// Lets a test check the register layout mma_layout.py assumes against the hardware.
int s24_mma_probe(const void* a, const void* b, const void* e, void* d, void* stream) {
  probe_kernel<<<1, 32, 0, static_cast<cudaStream_t>(stream)>>>(static_cast<const uint32_t*>(a),
                                                               static_cast<const uint32_t*>(b),
                                                               static_cast<const uint32_t*>(e), static_cast<float*>(d));
  return (int)cudaGetLastError();
}

// int4 qweight (n, k/16) + bf16 scales (n, k/128) -> bf16 kept values (n, k/2) at `out` (16-byte aligned).
int s24_int4_values(const void* q, const void* s, void* out, int n, int k, void* stream) {
  if (k % 128 || n < 1) return (int)cudaErrorInvalidValue;
  const long words = (long)n * (k / 16);
  const int threads = 256;
  int4_values_kernel<<<(unsigned)((words + threads - 1) / threads), threads, 0, static_cast<cudaStream_t>(stream)>>>(
      static_cast<const uint32_t*>(q), static_cast<const __nv_bfloat16*>(s), static_cast<uint4*>(out), words, k / 16,
      k / 128);
  return (int)cudaGetLastError();
}

const char* s24_mma_error_string(int code) { return cudaGetErrorString(static_cast<cudaError_t>(code)); }
}
