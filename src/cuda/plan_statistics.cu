// Step A of DESIGN.md section 2 on the device: last-block statistics of every query head.
// The last rows = min(128, N) queries of head h are scored against all N keys with tensor-core
// products (bf16/f16 in, fp32 out; the base-2 scaling fused into the FMA that feeds ex2.approx, as
// in the attention kernel's softmax), 64 keys at a time, the next 64 keys loading (cp.async,
// double buffer, 128-byte swizzled) while the current ones are scored. The rows form 8 groups of
// 16 (group G: rows 16G..16G+15); warp w of the CTA's one warpgroup owns groups w and w + 4 and
// keeps their Q fragments and scores in registers (in group G, lane l holds rows 16G + l/4 and
// 16G + l/4 + 8, columns 8t + 2(l%4) + {0, 1} of the chunk, t = 0..7). On sm_90a the warpgroup
// scores a chunk with two wgmma m64n64k16 per k-step (A = the Q fragments in registers, B = the
// chunk in shared memory), elsewhere with mma.sync m16n8k16 (each K fragment a warp loads by
// ldmatrix serving both its groups); the same fragments either way. A grid of (key range, head)
// CTAs streams over K twice:
//   pass 1: per lane and row, an online max and sum of exp2 over the lane's columns (in column
//           order), combined over the 4 lanes of the row at the end -> row_stats; no shared
//           memory but the K buffers, one block barrier per chunk (the buffer swap);
//   pass 2: the ranges' (max, sum) combined, probabilities recomputed in registers and reduced
//           into the vertical profile (per-group column sums by a fixed tree over the rows,
//           formed by recursive halving across the lanes, then added in group order; each key
//           owned by one CTA) and the slash profile (each group's probabilities through its own
//           shared tile into diagonal strips: rows g and g + 8 of a lane's fragment share a
//           diagonal one n8 tile apart, so the lane adds them before the tile, which holds 8
//           paired rows and each strip entry sums 8 of them in row order; then added in group
//           order into a sliding window, double-buffered; the < 128 entries that run past the
//           end of a range go to `spill` and are added by the next kernel), so every sum is
//           formed in a fixed order and the result is deterministic. Two block barriers a chunk.
// Every sum has the order it had with one warp per group (8 warps of 16 rows): which warp holds a
// group does not change a result.
// The bs x N probabilities never exist: only one paired 8 x 72 tile per group, in pass 2.
// Then block sums (fp64, as the host), the gamma budgets (each head's own gamma) by a radix
// select per profile (plan_budgets.cu), and the ranking of the block profiles for the top-k of
// step D (plan_rank.cu; a CUB segmented sort past nb = 4096).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cmath>

#include "cuda_check.h"
#include "plan_common.cuh"
#include "plan_layout.h"
#include "ptx_sm80.cuh"
#include "ptx_sm90.cuh"
#include "wgmma_sm90.cuh"

namespace sp::cuda {
namespace {

constexpr int stats_threads = 128;  // 4 warps, 32 query rows (two groups of 16) each

struct stats_args {
  qk_views x;
  plan_sizes s;
  float scale_log2;  // log2(e) / sqrt(D): scores enter exp2 in base 2
  float* row_stats;
  float* tok;
  float* spill;
  int32_t* error;
  int32_t layer;
};

constexpr int stats_warps = stats_threads / 32;
constexpr int stats_groups = stats_rows / 16;         // 16-row groups; warp w owns w, w + 4
constexpr int group_tiles = 2;                         // groups (m16 tiles) per warp
static_assert(stats_warps * group_tiles == stats_groups, "every group has one warp");
static_assert(stats_threads == 128, "one warpgroup: wgmma's m64 tile is 4 warps x 16 rows");
// Group of warp `warp`'s m-th tile: wgmma m64 tile m gives warp w rows 64m + 16w .. + 15.
__host__ __device__ constexpr int group_of(int warp, int m) { return m * stats_warps + warp; }
constexpr int stats_tiles = stats_chunk / 8;           // n8 tiles of scores per chunk and warp
constexpr int strip_size = stats_chunk + 16;           // slash entries of a warp per chunk
constexpr int window_size = stats_chunk + stats_rows;  // slash entries a chunk touches (< 192)
constexpr int paired_columns = stats_chunk + 8;        // columns of a paired p tile row

// A K buffer: [D / 64 column chunks][64 keys][64 elements], 128-byte swizzled (16-byte piece c
// of a 128-byte row r stored at piece c ^ (r % 8)), the layout wgmma reads through a descriptor
// and ldmatrix reads without bank conflicts. Byte offset of key row `row`, 16-byte piece `piece`
// (elements 8 piece .. 8 piece + 7).
constexpr int key_column_bytes = stats_chunk * 128;
__device__ __forceinline__ int key_offset(int row, int piece) {
  return (piece >> 3) * key_column_bytes + row * 128 + (((piece & 7) ^ (row & 7)) << 4);
}

template <class T, int D>
struct stats_smem {
  // 16-byte Q row padding. A p tile row holds 72 columns (pass 2's paired rows); rows 24 floats
  // apart in the banks, so a half-warp's float2 stores of rows g..g+3 hit 32 distinct banks.
  static constexpr int ldq = D + 8, ldp = paired_columns + 16;
  static constexpr int k_bytes = D / 64 * key_column_bytes;
  // Double buffer: chunk c + 1 loads while c is scored; 1024-byte aligned (swizzle atoms).
  alignas(1024) unsigned char k[2][k_bytes];
  union {  // Q until every warp holds its fragments (chunk 0), then pass 2's p tiles
    T q[stats_rows * ldq];                // [128 rows, D] (rows past `rows` zero)
    float p[stats_groups][8 * ldp];       // pass 2: group G's 8 paired rows
  };
  float m[stats_rows], inv[stats_rows];   // pass 2: each row's max and 1 / sum
  float colpart[stats_groups][stats_chunk];
  float strips[stats_groups][strip_size];
  float window[2][window_size];           // chunk c reads window[c & 1], writes the other
};

// Rows first .. first + rows - 1 of the prompt into dst; rows past `valid` and tokens before
// src_first (src's row 0 is token src_first: a chunk's queries) are zeros.
template <class T, int D>
__device__ void load_rows(T* dst, int ld, const T* src, int64_t token_stride, int64_t first,
                          int rows, int64_t valid, int64_t src_first) {
  constexpr int vec = 8;  // 16 bytes
  for (int idx = threadIdx.x; idx < rows * (D / vec); idx += blockDim.x) {
    const int row = idx / (D / vec), col = (idx % (D / vec)) * vec;
    const int64_t token = first + row;
    uint4 v = make_uint4(0, 0, 0, 0);
    if (row < valid && token >= src_first)
      v = *reinterpret_cast<const uint4*>(src + (token - src_first) * token_stride + col);
    *reinterpret_cast<uint4*>(dst + row * ld + col) = v;
  }
}

// Starts the copy of keys [j0, j0 + 64) (zeros past N) into a K buffer (key_offset's layout).
template <class T, int D>
__device__ void load_keys_async(unsigned char* dst, const T* k_head, int64_t token_stride,
                                int64_t j0, int64_t n) {
  constexpr int vec = 8;  // 16 bytes
  for (int idx = threadIdx.x; idx < stats_chunk * (D / vec); idx += blockDim.x) {
    const int row = idx / (D / vec), piece = idx % (D / vec);
    const bool valid = j0 + row < n;
    cp_async_16(dst + key_offset(row, piece),
                k_head + (valid ? (j0 + row) * token_stride + piece * vec : 0), valid);
  }
  cp_async_commit();
}

// The warp's two groups of 16 query rows (A fragments q_frag[m], groups group_of(warp, m))
// against the 64 keys of a K buffer, raw (not yet scaled to base 2): sc[m][t][0..1] row lane/4
// of group m, sc[m][t][2..3] row lane/4 + 8, columns 8t + 2(lane%4) + {0, 1}. Every accumulator
// adds d in 16-wide steps in ascending order. sm_90a: the whole warpgroup calls it together (two
// wgmma m64n64k16 per k-step, waited for before it returns); elsewhere each K fragment a warp
// loads feeds both its groups' mma.sync.
template <class T, int D>
__device__ __forceinline__ void score_rows(float (&sc)[group_tiles][stats_tiles][4],
                                           const uint32_t (&q_frag)[group_tiles][D / 16][4],
                                           const unsigned char* keys) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  wgmma_fence();
#pragma unroll
  for (int kq = 0; kq < D / 16; ++kq) {
    const uint64_t desc =
        smem_descriptor(keys + (kq / 4) * key_column_bytes + (kq % 4) * 32, 16, 1024);
#pragma unroll
    for (int m = 0; m < group_tiles; ++m)
      wgmma_rs_m64n64k16<0>(wgmma_type<T>{}, sc[m], q_frag[m][kq], desc, kq > 0 ? 1 : 0);
  }
  wgmma_commit();
  wgmma_wait<0>();
#pragma unroll
  for (int m = 0; m < group_tiles; ++m) fence_registers(sc[m]);
#else
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int m = 0; m < group_tiles; ++m)
#pragma unroll
    for (int t = 0; t < stats_tiles; ++t)
      sc[m][t][0] = sc[m][t][1] = sc[m][t][2] = sc[m][t][3] = 0.0f;
#pragma unroll
  for (int kq = 0; kq < D / 16; ++kq) {
#pragma unroll
    for (int nn = 0; nn < stats_tiles / 2; ++nn) {
      // Matrices: keys 16nn + 0..7 at d 16kq + 0..7 / + 8..15, keys 16nn + 8..15 likewise.
      uint32_t b[4];
      ldmatrix_x4(b, keys + key_offset(nn * 16 + ((lane >> 4) << 3) + (lane & 7),
                                       2 * kq + ((lane >> 3) & 1)));
#pragma unroll
      for (int m = 0; m < group_tiles; ++m) {
        mma_16816<T>(sc[m][2 * nn], q_frag[m][kq], b[0], b[1]);
        mma_16816<T>(sc[m][2 * nn + 1], q_frag[m][kq], b[2], b[3]);
      }
    }
  }
#endif
}

// Online (max, sum) of exp2 over one row's 16 raw scores of this lane (x[t][b], in t then b
// order), in base-2 units: m = max score * scale_log2 (scaling is monotone, so the max of the
// scaled scores), terms exp2(score * scale_log2 - m) with the scaling fused into the FMA.
__device__ __forceinline__ void online_row(float& m, float& l, const float (&sc)[stats_tiles][4],
                                           int half, float scale_log2) {
  float raw = -INFINITY;
#pragma unroll
  for (int t = 0; t < stats_tiles; ++t)
    raw = fmaxf(raw, fmaxf(sc[t][2 * half], sc[t][2 * half + 1]));
  if (raw == -INFINITY) return;
  const float mx = fmaxf(m, raw * scale_log2);
  // exp2(0) is exactly 1: skip it while the max stands (most chunks), same sums.
  if (mx != m) l *= exp2_approx(m - mx);
#pragma unroll
  for (int t = 0; t < stats_tiles; ++t)
    l += exp2_approx(fmaf(sc[t][2 * half], scale_log2, -mx)) +
         exp2_approx(fmaf(sc[t][2 * half + 1], scale_log2, -mx));
  m = mx;
}

// Column sums of a group's 16 rows (registers sc[m] as score_rows leaves them): rows g and g + 8 of
// each lane added, then the 8 values of g added as the tree ((0+1)+(2+3))+((4+5)+(6+7)) over g
// (xor 4, 8, 16). Recursive halving: at each level a lane keeps the half of its tiles whose next
// bit equals its own bit of g and sends the other half to its partner (8 + 4 + 2 shuffles), so
// lane (g, quad) ends with tile g's pair, columns 8g + 2 quad + {0, 1}, with the bits of a full
// butterfly (x + y == y + x in IEEE arithmetic).
__device__ __forceinline__ float2 warp_column_sums(const float (&sc)[stats_tiles][4], int g) {
  static_assert(stats_tiles == 8, "three halving levels over the 8 lanes of a column");
  float v[8][2];
#pragma unroll
  for (int t = 0; t < 8; ++t) v[t][0] = sc[t][0] + sc[t][2], v[t][1] = sc[t][1] + sc[t][3];
  const bool b0 = g & 1, b1 = (g >> 1) & 1, b2 = (g >> 2) & 1;
  float a[4][2];  // tiles 2i + b0
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      const float keep = b0 ? v[2 * i + 1][j] : v[2 * i][j];
      const float give = b0 ? v[2 * i][j] : v[2 * i + 1][j];
      a[i][j] = keep + __shfl_xor_sync(0xffffffffu, give, 4);
    }
  float b[2][2];  // tiles 4k + 2 b1 + b0
#pragma unroll
  for (int k = 0; k < 2; ++k)
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      const float keep = b1 ? a[2 * k + 1][j] : a[2 * k][j];
      const float give = b1 ? a[2 * k][j] : a[2 * k + 1][j];
      b[k][j] = keep + __shfl_xor_sync(0xffffffffu, give, 8);
    }
  float c[2];  // tile g
#pragma unroll
  for (int j = 0; j < 2; ++j) {
    const float keep = b2 ? b[1][j] : b[0][j];
    const float give = b2 ? b[0][j] : b[1][j];
    c[j] = keep + __shfl_xor_sync(0xffffffffu, give, 16);
  }
  return make_float2(c[0], c[1]);
}

// (m, l) of two disjoint column sets combined: the max of both, sums rescaled to it.
__device__ __forceinline__ void combine_stats(float& m, float& l, float om, float ol) {
  const float nm = fmaxf(m, om);
  l = nm == -INFINITY ? 0.0f
                      : (m == -INFINITY ? 0.0f : l * exp2f(m - nm)) +
                            (om == -INFINITY ? 0.0f : ol * exp2f(om - nm));
  m = nm;
}

template <class T, int D, int pass>
__global__ void __launch_bounds__(stats_threads, stats_blocks_per_sm)
    last_block_stats_kernel(stats_args a) {
  using S = stats_smem<T, D>;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  // The K buffers' swizzle atoms need 1024-byte alignment: the launch adds that much slack.
  S& sm = *reinterpret_cast<S*>((reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~uintptr_t{1023});
  const int split = blockIdx.x, h = blockIdx.y;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane / 4, quad = lane % 4;  // fragment row and column pair of this lane
  const plan_sizes& s = a.s;
  const int64_t n = s.n, q0 = n - s.rows;
  const int rows = static_cast<int>(s.rows);
  const int64_t ja = split * s.split_keys, jb = min(n, ja + s.split_keys);
  const int chunks = static_cast<int>((jb - ja + stats_chunk - 1) / stats_chunk);
  const T* q_head = static_cast<const T*>(a.x.q) + h * a.x.q_head_stride;
  const T* k_head = static_cast<const T*>(a.x.k) + (h / s.group) * a.x.k_head_stride;
  load_keys_async<T, D>(sm.k[0], k_head, a.x.k_token_stride, ja, n);
  load_rows<T, D>(sm.q, S::ldq, q_head, a.x.q_token_stride, q0, stats_rows, rows, a.x.q_first);
  // Group m of this warp is group_of(warp, m), rows 16 group + 0..15; this lane's rows in it are
  // row_lo[m] and row_hi[m] = row_lo[m] + 8 (absolute q0 + row).
  int row_lo[group_tiles], row_hi[group_tiles];
#pragma unroll
  for (int m = 0; m < group_tiles; ++m) {
    row_lo[m] = group_of(warp, m) * 16 + g;
    row_hi[m] = row_lo[m] + 8;
  }

  if (pass == 2) {
    if (threadIdx.x < stats_rows) {
      const int row = threadIdx.x;
      const float* all = a.row_stats + static_cast<int64_t>(h) * s.splits * stats_rows * 2;
      float m = -INFINITY;
      for (int64_t r = 0; r < s.splits; ++r) m = fmaxf(m, all[(r * stats_rows + row) * 2]);
      float l = 0.0f;
      for (int64_t r = 0; r < s.splits; ++r) {
        const float rm = all[(r * stats_rows + row) * 2];
        if (rm != -INFINITY) l += all[(r * stats_rows + row) * 2 + 1] * exp2f(rm - m);
      }
      const bool real = row < rows && l > 0.0f;
      sm.m[row] = real ? m : 0.0f;
      sm.inv[row] = real ? 1.0f / l : 0.0f;
    }
    for (int i = threadIdx.x; i < window_size; i += blockDim.x) sm.window[0][i] = 0.0f;
  }

  uint32_t q_frag[group_tiles][D / 16][4];
  float m_lo[group_tiles], l_lo[group_tiles], m_hi[group_tiles], l_hi[group_tiles];  // pass 1
#pragma unroll
  for (int m = 0; m < group_tiles; ++m) {
    m_lo[m] = m_hi[m] = -INFINITY;
    l_lo[m] = l_hi[m] = 0.0f;
  }
  bool bad = false;
  const float inv_rows = 1.0f / static_cast<float>(rows);
  float* v_tok = a.tok + static_cast<int64_t>(h) * n;
  float* s_tok = a.tok + (s.heads + h) * n;

  for (int c = 0; c < chunks; ++c) {
    const int64_t j0 = ja + static_cast<int64_t>(c) * stats_chunk;
    cp_async_wait<0>();
    fence_proxy_async_shared();  // this thread's copies of chunk c, visible to wgmma
    // Chunk c's keys (and, at c = 0, Q and the pass-2 row constants) are visible, and every warp
    // is done with chunk c - 1 (its K buffer, p tiles, strips and window read).
    __syncthreads();
    if (c == 0) {
#pragma unroll
      for (int m = 0; m < group_tiles; ++m) {
        const int first_row = group_of(warp, m) * 16;
#pragma unroll
        for (int kq = 0; kq < D / 16; ++kq)
          ldmatrix_x4(q_frag[m][kq],
                      sm.q + (first_row + (lane & 15)) * S::ldq + kq * 16 + (lane >> 4) * 8);
      }
      __syncthreads();  // every warp read Q before pass 2 writes p over it
    }
    if (c + 1 < chunks)
      load_keys_async<T, D>(sm.k[(c + 1) & 1], k_head, a.x.k_token_stride, j0 + stats_chunk, n);
    float sc[group_tiles][stats_tiles][4];
    score_rows<T, D>(sc, q_frag, sm.k[c & 1]);
    // Every key of the chunk valid for every row: no masking needed. Key j is valid for row r
    // when r < rows and j <= q0 + r (so j < N).
    const bool full = j0 + stats_chunk - 1 <= q0 && j0 + stats_chunk <= n;

    if constexpr (pass == 1) {
#pragma unroll
      for (int m = 0; m < group_tiles; ++m) {
        if (!full) {
#pragma unroll
          for (int t = 0; t < stats_tiles; ++t)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
              const int row = e < 2 ? row_lo[m] : row_hi[m];
              const int64_t key = j0 + t * 8 + 2 * quad + (e & 1);
              const bool valid = row < rows && key <= q0 + row;
              bad |= valid && !isfinite(sc[m][t][e]);
              if (!valid) sc[m][t][e] = -INFINITY;
            }
        } else {
#pragma unroll
          for (int t = 0; t < stats_tiles; ++t)
#pragma unroll
            for (int e = 0; e < 4; ++e) bad |= !isfinite(sc[m][t][e]);
        }
        online_row(m_lo[m], l_lo[m], sc[m], 0, a.scale_log2);
        online_row(m_hi[m], l_hi[m], sc[m], 1, a.scale_log2);
      }
    } else {
#pragma unroll
      for (int m = 0; m < group_tiles; ++m) {
        const int group = group_of(warp, m);
        // Pass 2: probabilities in registers (zero where masked). The row constants come from
        // shared memory each chunk (registers are short with two groups' scores live).
        const float pm_lo = sm.m[row_lo[m]], pinv_lo = sm.inv[row_lo[m]];
        const float pm_hi = sm.m[row_hi[m]], pinv_hi = sm.inv[row_hi[m]];
#pragma unroll
        for (int t = 0; t < stats_tiles; ++t)
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const bool lo = e < 2;
            float pv = exp2_approx(fmaf(sc[m][t][e], a.scale_log2, -(lo ? pm_lo : pm_hi))) *
                       (lo ? pinv_lo : pinv_hi);
            if (!full) {
              const int row = lo ? row_lo[m] : row_hi[m];
              const int64_t key = j0 + t * 8 + 2 * quad + (e & 1);
              if (row >= rows || key > q0 + row) pv = 0.0f;
            }
            sc[m][t][e] = pv;
          }
        // The group's paired tile for the diagonal strips: row g, column c + 8 holds
        // P[g][c] + P[g + 8][c + 8] for c = -8 .. 63 (P = the group's 16 x 64 probabilities,
        // absent entries left out): the two lie on one diagonal, in this lane's tiles u - 1 and u.
        float* my_p = sm.p[group];
#pragma unroll
        for (int u = 0; u <= stats_tiles; ++u) {
          float2 x;
          if (u == 0)
            x = make_float2(sc[m][0][2], sc[m][0][3]);
          else if (u == stats_tiles)
            x = make_float2(sc[m][u - 1][0], sc[m][u - 1][1]);
          else
            x = make_float2(sc[m][u - 1][0] + sc[m][u][2], sc[m][u - 1][1] + sc[m][u][3]);
          *reinterpret_cast<float2*>(my_p + g * S::ldp + u * 8 + 2 * quad) = x;
        }
        const float2 mine = warp_column_sums(sc[m], g);
        *reinterpret_cast<float2*>(&sm.colpart[group][g * 8 + 2 * quad]) = mine;
        __syncwarp();
        // Strip entry e of this group: rows r and r + 8 at columns e - 15 + r and e - 7 + r
        // (distance constant), i.e. paired row r at column e - 7 + r, for r = 0..7.
        for (int e = lane; e < strip_size - 1; e += 32) {
          float acc = 0.0f;
#pragma unroll
          for (int r = 0; r < 8; ++r) {
            const int col = e - 7 + r;
            if (col >= 0 && col < paired_columns) acc += my_p[r * S::ldp + col];
          }
          sm.strips[group][e] = acc;
        }
      }
      __syncthreads();
      // Window entry d = key column + (rows - 1 - query row); group G's strip entry e has column
      // e - 15 + r at row 16G + r, so d = e - 15 + rows - 1 - 16G.
      const float* window = sm.window[c & 1];
      float* next = sm.window[(c + 1) & 1];
      for (int t = threadIdx.x; t < window_size - 1; t += blockDim.x) {
        if (t < stats_chunk && j0 + t < n) {
          float sum = 0.0f;
          for (int w = 0; w < stats_groups; ++w) sum += sm.colpart[w][t];
          v_tok[j0 + t] = sum * inv_rows;
        }
        float acc = window[t];
        for (int w = 0; w < stats_groups; ++w) {
          const int e = t + 15 - (rows - 1) + 16 * w;
          if (e >= 0 && e < strip_size - 1) acc += sm.strips[w][e];
        }
        // Entries < 64 are complete; the rest shift down by 64 and the top of the window clears.
        if (t < stats_chunk) {
          if (j0 + t < n) s_tok[j0 + t] = acc * inv_rows;
        } else {
          next[t - stats_chunk] = acc;
        }
        if (t >= stats_rows - 1) next[t] = 0.0f;
      }
    }
  }

  if constexpr (pass == 1) {
    float* stats = a.row_stats + (static_cast<int64_t>(h) * s.splits + split) * stats_rows * 2;
#pragma unroll
    for (int m = 0; m < group_tiles; ++m) {
#pragma unroll
      for (int o = 1; o < 4; o <<= 1) {
        combine_stats(m_lo[m], l_lo[m], __shfl_xor_sync(0xffffffffu, m_lo[m], o),
                      __shfl_xor_sync(0xffffffffu, l_lo[m], o));
        combine_stats(m_hi[m], l_hi[m], __shfl_xor_sync(0xffffffffu, m_hi[m], o),
                      __shfl_xor_sync(0xffffffffu, l_hi[m], o));
      }
      if (quad == 0) {
        stats[row_lo[m] * 2] = m_lo[m];
        stats[row_lo[m] * 2 + 1] = l_lo[m];
        stats[row_hi[m] * 2] = m_hi[m];
        stats[row_hi[m] * 2 + 1] = l_hi[m];
      }
    }
    if (__syncthreads_or(bad) && threadIdx.x == 0)
      record_error(a.error, plan_error_nonfinite_input, a.layer, h);
  } else {
    __syncthreads();
    const float* window = sm.window[chunks & 1];
    float* spill = a.spill + (static_cast<int64_t>(h) * s.splits + split) * stats_rows;
    for (int i = threadIdx.x; i < stats_rows; i += blockDim.x)
      spill[i] = i < rows - 1 ? window[i] * inv_rows : 0.0f;
  }
}

// Adds each range's slash spill to the next range's entries. grid (splits - 1, H).
__global__ void add_spill_kernel(plan_sizes s, float* tok, const float* spill) {
  const int split = blockIdx.x, h = blockIdx.y, d = threadIdx.x;
  const int64_t t = (split + 1) * s.split_keys + d;
  if (d < s.rows - 1 && t < s.n)
    tok[(s.heads + h) * s.n + t] += spill[(static_cast<int64_t>(h) * s.splits + split) * stats_rows + d];
}

// Block sums of the 2H profiles (fp64, in token order as the host), the ranking keys (forced
// index at +inf: key block 0 for v, the main diagonal chunk nb-1 for s) and segment offsets.
// One block column per thread: grid (ceil(nb / sums_threads), 2H).
constexpr int sums_threads = 64;
__global__ void block_sums_kernel(plan_pointers p) {
  const plan_sizes& s = p.s;
  const int64_t seg = blockIdx.y, nb = s.nb;
  const int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (blockIdx.x == 0 && threadIdx.x == 0) {
    p.blk_offsets[seg] = static_cast<int32_t>(seg * nb);
    if (seg == 2 * s.heads - 1) p.blk_offsets[seg + 1] = static_cast<int32_t>((seg + 1) * nb);
  }
  if (c >= nb) return;
  const float* x = p.tok + seg * s.n + c * plan_block;
  const int64_t len = min(s.n - c * plan_block, static_cast<int64_t>(plan_block));
  double sum = 0.0;
#pragma unroll 8
  for (int64_t i = 0; i < len; ++i) sum += x[i];
  const float v = static_cast<float>(sum);
  const int64_t forced = seg < s.heads ? 0 : nb - 1;
  p.blk[seg * nb + c] = v;
  p.blk_keys[seg * nb + c] = c == forced ? INFINITY : v;
  p.blk_idx[seg * nb + c] = static_cast<int32_t>(c);
}

// rank[seg, idx] = position of idx in its profile's descending order. grid (2H).
__global__ void rank_kernel(plan_pointers p) {
  const int64_t seg = blockIdx.x, nb = p.s.nb;
  for (int64_t i = threadIdx.x; i < nb; i += blockDim.x)
    p.rank[seg * nb + p.blk_idx_sorted[seg * nb + i]] = static_cast<int32_t>(i);
}

template <class T, int D>
void launch_passes(const stats_args& a, cudaStream_t stream) {
  const size_t smem = sizeof(stats_smem<T, D>) + 1024;  // + alignment slack
  // stats_blocks_per_sm blocks in an SM's 228 KB, each with the 1 KB the system reserves.
  static_assert((sizeof(stats_smem<T, D>) + 2048) * stats_blocks_per_sm <= 228 * 1024,
                "the statistics' blocks per SM (plan_layout.h) do not fit in shared memory");
  const dim3 grid(static_cast<unsigned>(a.s.splits), static_cast<unsigned>(a.s.heads));
  const char* fn = "device_planner::plan";
  check_cuda(cudaFuncSetAttribute(last_block_stats_kernel<T, D, 1>,
                                  cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)),
             fn, "statistics kernel attribute");
  check_cuda(cudaFuncSetAttribute(last_block_stats_kernel<T, D, 2>,
                                  cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)),
             fn, "statistics kernel attribute");
  last_block_stats_kernel<T, D, 1><<<grid, stats_threads, smem, stream>>>(a);
  last_block_stats_kernel<T, D, 2><<<grid, stats_threads, smem, stream>>>(a);
}

}  // namespace

void launch_token_profiles(const plan_sizes& s, const qk_views& x, float* row_stats, float* tok,
                           float* spill, int32_t* error, int32_t layer, cudaStream_t stream) {
  stats_args a{x, s, static_cast<float>(1.4426950408889634 / std::sqrt(static_cast<double>(s.dim))),
               row_stats, tok, spill, error, layer};
  if (s.dim == 64) {
    if (x.half) launch_passes<__half, 64>(a, stream);
    else launch_passes<__nv_bfloat16, 64>(a, stream);
  } else {
    if (x.half) launch_passes<__half, 128>(a, stream);
    else launch_passes<__nv_bfloat16, 128>(a, stream);
  }
  if (s.splits > 1)
    add_spill_kernel<<<dim3(static_cast<unsigned>(s.splits - 1), static_cast<unsigned>(s.heads)),
                       stats_rows, 0, stream>>>(s, tok, spill);
  check_cuda(cudaGetLastError(), "device_planner::plan", "launching the statistics kernels");
}

void launch_statistics(const plan_pointers& p, const state_pointers& st, const qk_views& x,
                       const plan_rules& r, cub_plan& c, cudaStream_t stream) {
  const char* fn = "device_planner::plan";
  launch_token_profiles(p.s, x, p.row_stats, p.tok, p.spill, st.error, r.layer, stream);
  const int heads = static_cast<int>(p.s.heads);
  block_sums_kernel<<<dim3(static_cast<unsigned>((p.s.nb + sums_threads - 1) / sums_threads), 2 * heads),
                      sums_threads, 0, stream>>>(p);
  launch_cover_budgets(p.tok, p.s.heads, p.s.n, p.s.select_parts, r, p.select, p.budgets, nullptr,
                       stream);
  if (!launch_rank_rows(p.blk_keys, p.rank, 2 * p.s.heads, p.s.nb, stream)) {
    cub_sort_blk(c, p, stream);
    rank_kernel<<<2 * heads, 256, 0, stream>>>(p);
  }
  check_cuda(cudaGetLastError(), fn, "launching the budget kernels");
}

}  // namespace sp::cuda
