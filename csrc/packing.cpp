// rdistill._C: the document packer (best fit, best fit decreasing, ordered next fit).
//
// Built by setup.py with a C++17 compiler and pybind11 only (no torch, no CUDA). The Python facade
// rdistill/packing.py validates the input, applies the overflow policy and calls `pack` here; its
// numpy twin gives the same assignments, decision for decision.
//
// Best fit: each document goes into the open pack with the smallest remaining room that still holds
// it; among packs with that room, the one created first; a new pack when none fits. Remaining room
// r in 1..C indexes a bucket of packs (a min-heap of pack ids), and a 64-ary bitset over 0..C marks
// the non-empty buckets, so "smallest room >= l" is a find-next-set-bit in O(log_64 C) word steps.
// Above `bucket_limit` a balanced tree of (room, pack id) pairs replaces the buckets: O(log n) per
// document and memory independent of C. Packs with no room left leave the structure (every document
// has at least one token). The loops run without the GIL.

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <limits>
#include <set>
#include <string>
#include <utility>
#include <vector>

namespace py = pybind11;

namespace {

constexpr int64_t kDefaultBucketLimit = int64_t{1} << 20;

// Bits 0..n-1 in levels of 64-bit words; a set bit at level k+1 marks a non-zero word at level k.
class NextSetBit {
 public:
  explicit NextSetBit(int64_t n) {
    int64_t words = std::max<int64_t>(n, 1);
    do {
      words = (words + 63) / 64;
      levels_.emplace_back(static_cast<size_t>(words), 0);
    } while (words > 1);
  }

  void set(int64_t i) {
    for (auto& level : levels_) {
      uint64_t& w = level[static_cast<size_t>(i >> 6)];
      const bool was_empty = w == 0;
      w |= uint64_t{1} << (i & 63);
      if (!was_empty) return;
      i >>= 6;
    }
  }

  void clear(int64_t i) {
    for (auto& level : levels_) {
      uint64_t& w = level[static_cast<size_t>(i >> 6)];
      w &= ~(uint64_t{1} << (i & 63));
      if (w != 0) return;
      i >>= 6;
    }
  }

  // The smallest set index >= i, or -1.
  int64_t next(int64_t i) const {
    size_t k = 0;
    for (;;) {
      const auto& level = levels_[k];
      const int64_t wi = i >> 6;
      if (wi >= static_cast<int64_t>(level.size())) return -1;
      const uint64_t bits = level[static_cast<size_t>(wi)] & (~uint64_t{0} << (i & 63));
      if (bits != 0) {
        i = (wi << 6) + __builtin_ctzll(bits);
        break;
      }
      if (k + 1 == levels_.size()) return -1;
      i = wi + 1;
      ++k;
    }
    while (k > 0) {
      --k;
      i = (i << 6) + __builtin_ctzll(levels_[k][static_cast<size_t>(i)]);
    }
    return i;
  }

 private:
  std::vector<std::vector<uint64_t>> levels_;
};

// Best fit over `order`; returns the pack id of each document in processing order.
std::vector<int32_t> best_fit_buckets(const int64_t* len, const std::vector<int64_t>& order, int64_t cap) {
  std::vector<int32_t> pack_of(order.size());
  std::vector<std::vector<int32_t>> bucket(static_cast<size_t>(cap) + 1);  // min-heaps of pack ids
  NextSetBit open(cap + 1);
  const std::greater<int32_t> later;
  int32_t num_packs = 0;
  for (size_t k = 0; k < order.size(); ++k) {
    const int64_t l = len[order[k]];
    const int64_t r = open.next(l);
    int32_t p;
    int64_t rest;
    if (r < 0) {
      p = num_packs++;
      rest = cap - l;
    } else {
      auto& h = bucket[static_cast<size_t>(r)];
      std::pop_heap(h.begin(), h.end(), later);
      p = h.back();
      h.pop_back();
      if (h.empty()) open.clear(r);
      rest = r - l;
    }
    pack_of[k] = p;
    if (rest > 0) {
      auto& h = bucket[static_cast<size_t>(rest)];
      if (h.empty()) open.set(rest);
      h.push_back(p);
      std::push_heap(h.begin(), h.end(), later);
    }
  }
  return pack_of;
}

std::vector<int32_t> best_fit_tree(const int64_t* len, const std::vector<int64_t>& order, int64_t cap) {
  std::vector<int32_t> pack_of(order.size());
  std::set<std::pair<int64_t, int32_t>> open;  // (remaining room, pack id)
  int32_t num_packs = 0;
  for (size_t k = 0; k < order.size(); ++k) {
    const int64_t l = len[order[k]];
    auto it = open.lower_bound({l, std::numeric_limits<int32_t>::min()});
    int32_t p;
    int64_t rest;
    if (it == open.end()) {
      p = num_packs++;
      rest = cap - l;
    } else {
      p = it->second;
      rest = it->first - l;
      open.erase(it);
    }
    pack_of[k] = p;
    if (rest > 0) open.emplace(rest, p);
  }
  return pack_of;
}

std::vector<int32_t> next_fit(const int64_t* len, const std::vector<int64_t>& order, int64_t cap) {
  std::vector<int32_t> pack_of(order.size());
  int32_t p = -1;
  int64_t used = cap;
  for (size_t k = 0; k < order.size(); ++k) {
    const int64_t l = len[order[k]];
    if (used + l > cap) {
      ++p;
      used = 0;
    }
    pack_of[k] = p;
    used += l;
  }
  return pack_of;
}

// Indices 0..n-1 sorted by length, longest first, ties in index order (a stable sort).
std::vector<int64_t> decreasing_order(const int64_t* len, int64_t n, int64_t cap, int64_t bucket_limit) {
  std::vector<int64_t> order(static_cast<size_t>(n));
  if (cap <= bucket_limit) {  // counting sort: lengths lie in 1..cap
    std::vector<int64_t> start(static_cast<size_t>(cap) + 2, 0);
    for (int64_t i = 0; i < n; ++i) ++start[static_cast<size_t>(cap - len[i])];
    int64_t sum = 0;
    for (auto& s : start) {
      const int64_t c = s;
      s = sum;
      sum += c;
    }
    for (int64_t i = 0; i < n; ++i) order[static_cast<size_t>(start[static_cast<size_t>(cap - len[i])]++)] = i;
  } else {
    for (int64_t i = 0; i < n; ++i) order[static_cast<size_t>(i)] = i;
    std::stable_sort(order.begin(), order.end(), [len](int64_t a, int64_t b) { return len[a] > len[b]; });
  }
  return order;
}

using Int64Array = py::array_t<int64_t, py::array::c_style | py::array::forcecast>;

// Returns (docs, offsets): pack j holds docs[offsets[j]:offsets[j+1]], indices into `lengths` in
// placement order; packs are numbered in creation order.
py::tuple pack(const Int64Array& lengths, int64_t capacity, const std::string& mode, int64_t bucket_limit) {
  if (lengths.ndim() != 1) throw py::value_error("lengths must be a 1-D array");
  if (capacity < 1) throw py::value_error("capacity must be positive, got " + std::to_string(capacity));
  if (mode != "bfd" && mode != "bf" && mode != "ordered")
    throw py::value_error("mode must be one of 'bfd', 'bf', 'ordered', got '" + mode + "'");
  const int64_t n = lengths.shape(0);
  if (n > std::numeric_limits<int32_t>::max()) throw py::value_error("at most 2**31 - 1 documents per call");
  const int64_t* len = lengths.data();
  for (int64_t i = 0; i < n; ++i) {
    if (len[i] < 1 || len[i] > capacity)
      throw py::value_error("document " + std::to_string(i) + " has length " + std::to_string(len[i]) +
                            "; every length must lie in 1..capacity (" + std::to_string(capacity) + ")");
  }

  py::array_t<int64_t> docs(n);
  int64_t* out = docs.mutable_data();
  std::vector<int64_t> offsets;
  {
    py::gil_scoped_release released;
    std::vector<int64_t> order;
    if (mode == "bfd") {
      order = decreasing_order(len, n, capacity, bucket_limit);
    } else {
      order.resize(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i) order[static_cast<size_t>(i)] = i;
    }
    std::vector<int32_t> pack_of;
    if (mode == "ordered") {
      pack_of = next_fit(len, order, capacity);
    } else if (capacity <= bucket_limit) {
      pack_of = best_fit_buckets(len, order, capacity);
    } else {
      pack_of = best_fit_tree(len, order, capacity);
    }
    int32_t num_packs = 0;
    for (const int32_t p : pack_of) num_packs = std::max(num_packs, p + 1);
    offsets.assign(static_cast<size_t>(num_packs) + 1, 0);
    for (const int32_t p : pack_of) ++offsets[static_cast<size_t>(p) + 1];
    for (size_t j = 1; j < offsets.size(); ++j) offsets[j] += offsets[j - 1];
    std::vector<int64_t> fill(offsets.begin(), offsets.end() - 1);
    for (size_t k = 0; k < order.size(); ++k) out[fill[static_cast<size_t>(pack_of[k])]++] = order[k];
  }
  py::array_t<int64_t> offs(static_cast<py::ssize_t>(offsets.size()));
  std::copy(offsets.begin(), offsets.end(), offs.mutable_data());
  return py::make_tuple(docs, offs);
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "rdistill's C++ extension: the document packer (see rdistill/packing.py).";
  m.attr("DEFAULT_BUCKET_LIMIT") = kDefaultBucketLimit;
  m.def("pack", &pack, py::arg("lengths"), py::arg("capacity"), py::arg("mode"),
        py::arg("bucket_limit") = kDefaultBucketLimit,
        "Pack documents of the given lengths (each in 1..capacity) into rows of `capacity` tokens.\n\n"
        "mode: 'bf' (best fit in the given order), 'bfd' (best fit, longest first, stable), 'ordered'\n"
        "(next fit). Returns (docs, offsets), int64 arrays: pack j holds docs[offsets[j]:offsets[j+1]],\n"
        "document indices in placement order, packs in creation order. Capacities above bucket_limit\n"
        "use a balanced tree instead of per-room buckets (same result).");
}
