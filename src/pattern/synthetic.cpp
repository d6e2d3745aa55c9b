// Synthetic structured-attention generator. Scores q.k/sqrt(D) are built from three parts:
//   local window: q and k share a direction u (per layer and KV head) on the RoPE pairs below
//     the four lowest-frequency ones; the query keeps the highest-frequency share of the pairs
//     (its group's cutoff), so the score is a * sum_p w_p cos(theta_p (i - j)): peaked at
//     distance 0, decaying over scales 1/theta_p; a (14-22) makes the window sharp;
//   sink and vertical columns: unit directions on the four lowest-frequency pairs (rotated by
//     less than 0.05 rad over 16K tokens at base 500000); key 0 carries direction 0, three sets
//     of three fixed positions carry directions 1..3, and each query head weights them. The
//     weight of direction 3 is applied to the first half of the queries only: a pattern that
//     the last query block cannot see but the exact block attention of a pivot can;
//   noise: Gaussian, std 1 on query components and 0.05 on key components.
// Group parameters come from the seed only, per-head jitter (+-10%) from (seed, layer, head).
#include "shareprefill/synthetic.h"

#include <cmath>
#include <random>

#include "shareprefill/error.h"

namespace sp {
namespace {

constexpr double rope_base = 500000.0;
constexpr int sink_directions = 4;  // direction 0 = sink, 1..3 = vertical column sets
constexpr int column_set_size = 3;
constexpr float q_noise = 1.0f;
constexpr float k_noise = 0.05f;

struct group_shape {
  double local = 0, sink = 0, cutoff_frac = 0;
  double column[sink_directions] = {};
};

uint64_t mix(uint64_t a, uint64_t b) {
  uint64_t x = a * 0x9E3779B97F4A7C15ull + b + 0x632BE59BD9B4E019ull;
  x ^= x >> 31;
  x *= 0xBF58476D1CE4E5B9ull;
  return x ^ (x >> 29);
}

std::vector<group_shape> group_shapes(const synthetic_params& p) {
  std::mt19937_64 rng(mix(p.seed, 0x67726f7570ull));
  std::uniform_real_distribution<double> u(0.0, 1.0);
  std::vector<group_shape> g(static_cast<size_t>(p.group_count()));
  for (auto& s : g) {
    s.local = 7.0 + 5.0 * u(rng);
    s.sink = 9.0 + 5.0 * u(rng);
    s.cutoff_frac = 0.5 + 0.25 * u(rng);
    s.column[0] = 0.0;
    for (int m = 1; m < sink_directions; ++m) s.column[m] = u(rng) < 0.6 ? 7.0 + 5.0 * u(rng) : 0.0;
  }
  return g;
}

// Dimension of direction m: first component of pair (D/2 - 1 - m).
int64_t direction_dim(int64_t dim, int m) {
  return 2 * (dim / 2 - 1 - m);
}

// x: [dim]; inv_freq: [dim / 2]
void rope_rotate(float* x, int64_t pos, const std::vector<double>& inv_freq) {
  for (size_t p = 0; p < inv_freq.size(); ++p) {
    const double theta = inv_freq[p] * static_cast<double>(pos);
    const double c = std::cos(theta), s = std::sin(theta);
    const double a = x[2 * p], b = x[2 * p + 1];
    x[2 * p] = static_cast<float>(a * c - b * s);
    x[2 * p + 1] = static_cast<float>(a * s + b * c);
  }
}

}  // namespace

void synthetic_params::validate() const {
  const char* fn = "synthetic_params::validate";
  // Upper bounds keep every buffer the generator sizes from these far from int64 overflow and
  // within memory: one layer's q is n_tokens * heads * dim floats, at most 2^31.
  check(n_tokens > 0 && n_tokens <= (int64_t{1} << 24), fn, "n_tokens must be in [1, 2^24], got ",
        n_tokens);
  check(layers > 0 && layers <= 4096, fn, "layers must be in [1, 4096], got ", layers);
  check(heads > 0 && kv_heads > 0 && heads <= 4096 && heads % kv_heads == 0, fn, "heads ", heads,
        " must be a multiple of kv_heads ", kv_heads, " in [1, 4096]");
  check(dim >= 16 && dim <= 1024 && dim % 2 == 0, fn, "dim must be even and in [16, 1024], got ",
        dim);
  check(n_tokens * heads * dim <= (int64_t{1} << 31), fn, "n_tokens x heads x dim = ", n_tokens,
        " x ", heads, " x ", dim, " exceeds 2^31 values per layer");
  check(groups >= 0, fn, "groups must be >= 0, got ", groups);
}

int64_t synthetic_params::group_count() const {
  return groups > 0 ? groups : std::max<int64_t>(1, heads / 2);
}

std::vector<int32_t> synthetic_groups(const synthetic_params& p) {
  p.validate();
  std::mt19937_64 rng(mix(p.seed, 0x61737367ull));
  std::uniform_int_distribution<int32_t> pick(0, static_cast<int32_t>(p.group_count() - 1));
  std::vector<int32_t> g(static_cast<size_t>(p.layers * p.heads));
  for (auto& x : g) x = pick(rng);
  return g;
}

cluster_map synthetic_cluster_map(const synthetic_params& p) {
  const std::vector<int32_t> groups = synthetic_groups(p);
  cluster_map map;
  map.source = "<synthetic groups>";
  for (int64_t g = 0; g < p.group_count(); ++g) {
    head_cluster c;
    c.id = std::to_string(g);
    c.shared = true;
    for (int64_t l = 0; l < p.layers; ++l)
      for (int64_t h = 0; h < p.heads; ++h)
        if (groups[static_cast<size_t>(l * p.heads + h)] == g)
          c.members.push_back({static_cast<int32_t>(l), static_cast<int32_t>(h)});
    if (!c.members.empty()) map.clusters.push_back(std::move(c));
  }
  return map;
}

synthetic_layer synthetic_generate_layer(const synthetic_params& p, int64_t layer) {
  p.validate();
  check(layer >= 0 && layer < p.layers, "synthetic_generate_layer", "layer ", layer, " not in [0, ",
        p.layers, ")");
  const int64_t n = p.n_tokens, h_q = p.heads, h_kv = p.kv_heads, d = p.dim;
  const int64_t group = h_q / h_kv;
  const int64_t local_pairs = d / 2 - sink_directions;
  const double unit = std::pow(static_cast<double>(d), 0.25);  // q.k/sqrt(D) = product of scales
  const std::vector<group_shape> shapes = group_shapes(p);
  const std::vector<int32_t> groups = synthetic_groups(p);
  std::vector<double> inv_freq(static_cast<size_t>(d / 2));
  for (int64_t i = 0; i < d / 2; ++i) inv_freq[i] = std::pow(rope_base, -2.0 * i / d);

  // Column positions are fixed per seed, so the same columns are heavy in every layer.
  std::mt19937_64 pos_rng(mix(p.seed, 0x636f6c73ull));
  std::uniform_int_distribution<int64_t> pos(1, std::max<int64_t>(1, n - 1));
  std::vector<int> column_dir(static_cast<size_t>(n), -1);
  column_dir[0] = 0;
  for (int m = 1; m < sink_directions; ++m)
    for (int i = 0; i < column_set_size && n > 1; ++i) column_dir[pos(pos_rng)] = m;

  std::mt19937_64 rng(mix(p.seed, 1000 + static_cast<uint64_t>(layer)));
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<double> jitter(0.9, 1.1);

  // Local direction per KV head: unit vector on the high-frequency pairs.
  std::vector<float> u(static_cast<size_t>(h_kv * d), 0.0f);
  for (int64_t kh = 0; kh < h_kv; ++kh) {
    double norm = 0.0;
    for (int64_t i = 0; i < 2 * local_pairs; ++i) {
      const float x = normal(rng);
      u[kh * d + i] = x;
      norm += static_cast<double>(x) * x;
    }
    for (int64_t i = 0; i < 2 * local_pairs; ++i)
      u[kh * d + i] = static_cast<float>(u[kh * d + i] / std::sqrt(norm));
  }
  // Query templates: the local direction cut to the group's pairs, scaled so that the score at
  // distance 0 is the head's local strength; plus the sink/column weights.
  std::vector<float> q_base(static_cast<size_t>(h_q * d), 0.0f);
  for (int64_t h = 0; h < h_q; ++h) {
    const group_shape& s = shapes[static_cast<size_t>(groups[layer * h_q + h])];
    const int64_t cut = std::max<int64_t>(1, static_cast<int64_t>(s.cutoff_frac * local_pairs));
    const float* uk = u.data() + (h / group) * d;
    double kept = 0.0;
    for (int64_t i = 0; i < 2 * std::min(cut, local_pairs); ++i) kept += uk[i] * uk[i];
    const double local = s.local * jitter(rng) * unit / kept;
    for (int64_t i = 0; i < 2 * std::min(cut, local_pairs); ++i)
      q_base[h * d + i] = static_cast<float>(local * uk[i]);
    q_base[h * d + direction_dim(d, 0)] = static_cast<float>(s.sink * jitter(rng) * unit);
    for (int m = 1; m < sink_directions; ++m)
      q_base[h * d + direction_dim(d, m)] = static_cast<float>(s.column[m] * jitter(rng) * unit);
  }

  synthetic_layer out;
  out.q.resize(static_cast<size_t>(n * h_q * d));
  out.k.resize(static_cast<size_t>(n * h_kv * d));
  out.v.resize(static_cast<size_t>(n * h_kv * d));
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t h = 0; h < h_q; ++h) {
      float* x = out.q.data() + (t * h_q + h) * d;
      for (int64_t i = 0; i < d; ++i) x[i] = q_base[h * d + i] + q_noise * normal(rng);
      if (2 * t >= n)
        x[direction_dim(d, sink_directions - 1)] -=
            q_base[h * d + direction_dim(d, sink_directions - 1)];
      rope_rotate(x, t, inv_freq);
    }
    for (int64_t kh = 0; kh < h_kv; ++kh) {
      float* x = out.k.data() + (t * h_kv + kh) * d;
      for (int64_t i = 0; i < d; ++i)
        x[i] = static_cast<float>(unit * u[kh * d + i]) + k_noise * normal(rng);
      if (column_dir[t] >= 0) x[direction_dim(d, column_dir[t])] += static_cast<float>(unit);
      rope_rotate(x, t, inv_freq);
      float* y = out.v.data() + (t * h_kv + kh) * d;
      for (int64_t i = 0; i < d; ++i) y[i] = normal(rng);
    }
  }
  return out;
}

}  // namespace sp
