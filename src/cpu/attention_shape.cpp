// Validation of attention inputs shared by the CPU kernels.
#include "shareprefill/attention.h"
#include "shareprefill/error.h"

namespace sp {

attention_shape attention_shape_of(const char* fn, const tensor_view& q, const tensor_view& k,
                                   const tensor_view& v, int64_t query_offset) {
  check(!q.empty() && !k.empty() && !v.empty(), fn, "q, k and v must all be given");
  check(!q.on_device && !k.on_device && !v.on_device, fn,
        "q, k and v must be host views (a device view goes to cuda_attention_block_sparse)");
  check(q.rank == 3 && k.rank == 3 && v.rank == 3, fn, "q, k, v must be rank 3 ([N, heads, D]), got ranks ",
        q.rank, ", ", k.rank, ", ", v.rank);
  check(q.is_contiguous() && k.is_contiguous() && v.is_contiguous(), fn,
        "q, k, v must be contiguous");
  attention_shape s;
  s.n = q.shape[0];
  s.heads = q.shape[1];
  s.dim = q.shape[2];
  s.kv_heads = k.shape[1];
  check(s.n > 0, fn, "sequence length N must be positive, got ", s.n);
  check(query_offset >= 0, fn, "query_offset=", query_offset, " (must be >= 0)");
  s.query_offset = query_offset;
  check(k.shape[0] == s.n_keys() && v.shape[0] == s.n_keys(), fn, "k/v have ", k.shape[0], "/",
        v.shape[0], " tokens but q has ", s.n,
        query_offset > 0 ? str(" from query_offset ", query_offset, " (expected ", s.n_keys(), ")")
                         : std::string());
  check(s.heads > 0 && s.kv_heads > 0, fn, "head counts must be positive (q ", s.heads, ", kv ",
        s.kv_heads, ")");
  check(s.heads % s.kv_heads == 0, fn, "query heads ", s.heads, " not divisible by kv heads ",
        s.kv_heads);
  check(v.shape[1] == s.kv_heads, fn, "v has ", v.shape[1], " heads but k has ", s.kv_heads);
  check(s.dim > 0 && k.shape[2] == s.dim && v.shape[2] == s.dim, fn, "head dims differ: q ",
        s.dim, ", k ", k.shape[2], ", v ", v.shape[2]);
  const tensor_view* inputs[3] = {&q, &k, &v};
  const char* names[3] = {"q", "k", "v"};
  for (int i = 0; i < 3; ++i) {
    const int64_t bad = find_non_finite(*inputs[i]);
    check(bad < 0, fn, names[i], " holds a non-finite value (NaN or Inf) at flat index ", bad,
          " (token ", bad / (inputs[i]->shape[1] * s.dim), ")");
  }
  return s;
}

void check_attention_outputs(const char* fn, const attention_shape& s, const tensor_view& out,
                             const tensor_view& lse) {
  check(!out.on_device && !lse.on_device, fn, "out and lse must be host views");
  check(!out.empty() && out.type == dtype::f32 && out.rank == 3 && out.is_contiguous(), fn,
        "out must be a contiguous f32 [N, H, D] view");
  check(out.shape[0] == s.n && out.shape[1] == s.heads && out.shape[2] == s.dim, fn,
        "out has shape [", out.shape[0], ", ", out.shape[1], ", ", out.shape[2], "], expected [",
        s.n, ", ", s.heads, ", ", s.dim, "]");
  if (lse.empty()) return;
  check(lse.type == dtype::f32 && lse.rank == 2 && lse.is_contiguous(), fn,
        "lse must be a contiguous f32 [H, N] view");
  check(lse.shape[0] == s.heads && lse.shape[1] == s.n, fn, "lse has shape [", lse.shape[0], ", ",
        lse.shape[1], "], expected [", s.heads, ", ", s.n, "]");
}

}  // namespace sp
