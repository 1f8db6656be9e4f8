//===- serving-loop.cpp - a serving loop over kvarn's managed pool --------===//
//
// Plays a small model's serving loop on the GPU through the C API: requests
// with random prompt lengths arrive, some share a finished request's prefix,
// decode steps and speculative steps (random acceptance) run over every
// layer, requests finish, get preempted (and are recomputed from their
// history) and are freed; the pool flushes after every step. After every
// step, each request's attention output of every layer is checked against
// the CPU reference (lib/Reference, fp64) two ways:
//   held:    over exactly what the GPU cache holds (downloaded), so the
//            decode/verify kernels are checked alone;
//   history: over a cache rebuilt on the CPU from the request's true K/V
//            history (rotated pool rows, or encodeRecord of full blocks where
//            the pool flushed them), so append, flush and the bookkeeping
//            are checked too.
// Both must be within 4e-4 (relative L2 per request and layer). At the end
// every block and slot must be back in the free lists.
//
//   serving-loop [--steps N] [--seed S]
//
// Exit 0: all checks passed; 1: a check failed; 77: no GPU (skipped).
//
//===----------------------------------------------------------------------===//

#include "kvarn/kvarn.h"

#include "kvarn/Layout/RecordLayout.h"
#include "kvarn/Reference/Attention.h"
#include "kvarn/Reference/Quantizer.h"
#include "kvarn/Reference/Rotation.h"
#include "kvarn/Runtime/Context.h"
#include "kvarn/Runtime/Memory.h"
#include "kvarn/Support/Half.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <random>
#include <string>
#include <vector>

using namespace kvarn;

namespace {

constexpr const char *kPreset = "kvarn_k4v2_g64";
constexpr int G = 64, D = 128, HK = 2, HQ = 8, LAYERS = 2;
constexpr int NUM_BLOCKS = 192, POOL_SLOTS = 40, MAX_REQUESTS = 16,
              MAX_BLOCKS = 12;
constexpr double kTolerance = 4e-4;

#define CHECK_KVARN(call)                                                      \
  do {                                                                         \
    kvarn_status_t s_ = (call);                                                \
    if (s_ != KVARN_OK) {                                                      \
      std::fprintf(stderr, "%s:%d: %s -> %s: %s\n", __FILE__, __LINE__,       \
                   #call, kvarn_status_string(s_), kvarn_last_error());        \
      std::exit(1);                                                            \
    }                                                                          \
  } while (0)

template <typename T> T orDie(llvm::Expected<T> v, const char *what) {
  if (!v) {
    std::fprintf(stderr, "%s: %s\n", what,
                 llvm::toString(v.takeError()).c_str());
    std::exit(1);
  }
  return std::move(*v);
}
void orDie(llvm::Error e, const char *what) {
  if (e) {
    std::fprintf(stderr, "%s: %s\n", what, llvm::toString(std::move(e)).c_str());
    std::exit(1);
  }
}

/// One token's un-rotated K or V: [LAYERS][HK][D] fp16.
using Token = std::vector<uint16_t>;

struct Request {
  std::vector<Token> k, v; // committed history
  bool live = true, needsPrefill = true;
};

Token randomToken(std::mt19937_64 &rng) {
  std::student_t_distribution<float> t(3.0f);
  Token tok(size_t(LAYERS) * HK * D);
  for (uint16_t &x : tok)
    x = floatToHalf(std::clamp(t(rng), -100.0f, 100.0f));
  return tok;
}

double relL2(const float *got, const float *want, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; ++i) {
    num += (double(got[i]) - want[i]) * (double(got[i]) - want[i]);
    den += double(want[i]) * want[i];
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

} // namespace

int main(int argc, char **argv) {
  int steps = 60;
  uint64_t seed = std::random_device{}();
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--steps"))
      steps = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--seed"))
      seed = std::strtoull(argv[i + 1], nullptr, 0);
  }
  std::printf("serving-loop: %s, D=%d, Hq/Hk %d/%d, %d layers, %d blocks, %d "
              "pool slots, %d steps, seed %llu\n",
              kPreset, D, HQ, HK, LAYERS, NUM_BLOCKS, POOL_SLOTS, steps,
              (unsigned long long)seed);
  int gpus = 0;
  if (kvarn_cuda_available(&gpus) != KVARN_OK || gpus == 0) {
    std::printf("serving-loop: no GPU (%s): skipped\n", kvarn_last_error());
    return 77;
  }
  std::mt19937_64 rng(seed);
  auto uniform = [&](int lo, int hi) {
    return std::uniform_int_distribution<int>(lo, hi)(rng);
  };
  cuda::Context gpu = orDie(cuda::Context::create(0), "context");
  kvarn_context_t *ctx = nullptr;
  CHECK_KVARN(kvarn_context_create(0, nullptr, &ctx));
  kvarn_pool_config_t cfg{kPreset, LAYERS, HK, HQ, D, 0, NUM_BLOCKS,
                          POOL_SLOTS, MAX_REQUESTS, MAX_BLOCKS};
  kvarn_pool_t *pool = nullptr;
  CHECK_KVARN(kvarn_pool_create(ctx, &cfg, &pool));
  kvarn_step_t *step = nullptr;
  CHECK_KVARN(kvarn_step_create(pool, &step));
  kvarn_pool_buffers_t bufs;
  CHECK_KVARN(kvarn_pool_buffers(pool, &bufs));
  RecordLayout layout =
      orDie(RecordLayout::get(**lookupPreset(kPreset), D), "layout");
  Rotation rot = orDie(Rotation::get(D), "rotation");
  const float scale = float(1.0 / std::sqrt(double(D)));

  std::map<int64_t, Request> requests;
  int64_t nextId = 1;
  double worstHeld = 0, worstHistory = 0;
  int failures = 0, checks = 0, decodeSteps = 0, verifySteps = 0, shared = 0,
      preempted = 0, finished = 0;
  long flushedBlocks = 0;

  // Device staging for one step's tokens.
  const size_t maxTokens = size_t(MAX_REQUESTS) * MAX_BLOCKS * G;
  cuda::DeviceBuffer dk = orDie(cuda::DeviceBuffer::allocate(gpu, maxTokens * HK * D * 2), "k");
  cuda::DeviceBuffer dv = orDie(cuda::DeviceBuffer::allocate(gpu, maxTokens * HK * D * 2), "v");
  const size_t maxQ = size_t(MAX_REQUESTS) * 4 * HQ * D;
  cuda::DeviceBuffer dq = orDie(cuda::DeviceBuffer::allocate(gpu, maxQ * 2), "q");
  cuda::DeviceBuffer dout = orDie(cuda::DeviceBuffer::allocate(gpu, maxQ * 2), "out");

  auto download = [&](void *host, CUdeviceptr from, size_t bytes) {
    auto scope = orDie(gpu.enter(), "enter");
    orDie(gpu.driver().check(gpu.driver().api().cuMemcpyDtoH(host, from, bytes),
                             "cuMemcpyDtoH"),
          "download");
  };

  // Appends `tokens` (per request) on every layer: upload K/V in step order.
  auto writeKV = [&](const std::vector<std::vector<const Token *>> &k,
                     const std::vector<std::vector<const Token *>> &v) {
    for (int l = 0; l < LAYERS; ++l) {
      std::vector<uint16_t> hk, hv;
      for (size_t r = 0; r < k.size(); ++r)
        for (size_t t = 0; t < k[r].size(); ++t) {
          const uint16_t *kt = k[r][t]->data() + size_t(l) * HK * D;
          const uint16_t *vt = v[r][t]->data() + size_t(l) * HK * D;
          hk.insert(hk.end(), kt, kt + HK * D);
          hv.insert(hv.end(), vt, vt + HK * D);
        }
      if (hk.empty())
        continue;
      orDie(dk.upload(hk.data(), hk.size() * 2), "upload k");
      orDie(dv.upload(hv.data(), hv.size() * 2), "upload v");
      CHECK_KVARN(kvarn_step_write_kv(step, l, dk.address(), dv.address()));
      CHECK_KVARN(kvarn_context_synchronize(ctx)); // the staging is reused
    }
  };

  for (int s = 0; s < steps; ++s) {
    // Arrivals, some sharing a finished request's prefix.
    int live = 0;
    for (auto &[id, r] : requests)
      live += r.live;
    while (live < 6 && int(requests.size()) < MAX_REQUESTS && uniform(0, 2)) {
      int64_t id = nextId++;
      CHECK_KVARN(kvarn_pool_add_request(pool, id));
      Request r;
      for (auto &[src, sr] : requests)
        if (!sr.live && sr.k.size() >= size_t(G) && uniform(0, 1)) {
          int tokens = std::min(int(sr.k.size()) / G * G, 7 * G);
          CHECK_KVARN(kvarn_pool_share_prefix(pool, id, src, tokens));
          r.k.assign(sr.k.begin(), sr.k.begin() + tokens);
          r.v.assign(sr.v.begin(), sr.v.begin() + tokens);
          ++shared;
          break;
        }
      int prompt = uniform(1, 250);
      for (int t = 0; t < prompt; ++t) {
        r.k.push_back(randomToken(rng));
        r.v.push_back(randomToken(rng));
      }
      requests[id] = std::move(r);
      ++live;
    }
    // Prefill (new and preempted requests): their history not yet in the pool.
    {
      std::vector<int64_t> ids;
      std::vector<int32_t> counts;
      std::vector<std::vector<const Token *>> ks, vs;
      for (auto &[id, r] : requests) {
        if (!r.live || !r.needsPrefill)
          continue;
        kvarn_request_info_t info;
        CHECK_KVARN(kvarn_pool_request_info(pool, id, &info));
        int have = info.length, want = int(r.k.size());
        ids.push_back(id);
        counts.push_back(want - have);
        ks.emplace_back();
        vs.emplace_back();
        for (int t = have; t < want; ++t) {
          ks.back().push_back(&r.k[t]);
          vs.back().push_back(&r.v[t]);
        }
      }
      if (!ids.empty()) {
        kvarn_status_t st =
            kvarn_step_begin(step, int32_t(ids.size()), ids.data(), counts.data());
        if (st == KVARN_ERROR_POOL_EXHAUSTED) {
          // Out of room: preempt the longest request and try next step.
          int64_t victim = -1;
          size_t longest = 0;
          for (auto &[id, r] : requests)
            if (r.live && !r.needsPrefill && r.k.size() > longest)
              victim = id, longest = r.k.size();
          if (victim >= 0) {
            CHECK_KVARN(kvarn_pool_preempt(pool, victim));
            requests[victim].needsPrefill = true;
            ++preempted;
          }
        } else {
          CHECK_KVARN(st);
          writeKV(ks, vs);
          CHECK_KVARN(kvarn_step_commit(step, nullptr));
          for (int64_t id : ids)
            requests[id].needsPrefill = false;
        }
      }
    }
    // A decode or speculative step over the live, prefilled requests.
    std::vector<int64_t> ids;
    for (auto &[id, r] : requests)
      if (r.live && !r.needsPrefill &&
          r.k.size() + 4 <= size_t(MAX_BLOCKS) * G)
        ids.push_back(id);
    bool speculative = uniform(0, 2) == 0;
    std::vector<int32_t> counts;
    int maxCount = 0;
    for (size_t i = 0; i < ids.size(); ++i) {
      counts.push_back(speculative ? uniform(1, 4) : 1);
      maxCount = std::max(maxCount, counts.back());
    }
    if (!ids.empty()) {
      kvarn_status_t st =
          kvarn_step_begin(step, int32_t(ids.size()), ids.data(), counts.data());
      if (st == KVARN_ERROR_POOL_EXHAUSTED) {
        CHECK_KVARN(kvarn_pool_preempt(pool, ids.back()));
        requests[ids.back()].needsPrefill = true;
        ++preempted;
        ids.clear();
      } else {
        CHECK_KVARN(st);
      }
    }
    if (!ids.empty()) {
      // Drafts: new tokens appended to a scratch history until commit.
      std::vector<std::vector<Token>> newK(ids.size()), newV(ids.size());
      std::vector<std::vector<const Token *>> ks(ids.size()), vs(ids.size());
      for (size_t i = 0; i < ids.size(); ++i) {
        for (int t = 0; t < counts[i]; ++t) {
          newK[i].push_back(randomToken(rng));
          newV[i].push_back(randomToken(rng));
        }
        for (int t = 0; t < counts[i]; ++t) {
          ks[i].push_back(&newK[i][t]);
          vs[i].push_back(&newV[i][t]);
        }
      }
      writeKV(ks, vs);
      int batch = int(ids.size()), T = speculative ? maxCount : 1;
      // Block tables and the pool's block_to_slot as the step sees them.
      std::vector<int32_t> b2s(NUM_BLOCKS);
      CHECK_KVARN(kvarn_pool_block_to_slot(pool, b2s.data(), NUM_BLOCKS));
      std::vector<int32_t> table(size_t(batch) * MAX_BLOCKS, 0), lens(batch),
          ctxLens(batch), qLens(batch);
      for (int b = 0; b < batch; ++b) {
        int32_t n = 0;
        CHECK_KVARN(kvarn_pool_request_blocks(pool, ids[b], &table[size_t(b) * MAX_BLOCKS],
                                              MAX_BLOCKS, &n));
        lens[b] = int32_t(requests[ids[b]].k.size()) + counts[b];
        ctxLens[b] = lens[b] - counts[b];
        qLens[b] = counts[b];
      }
      for (int l = 0; l < LAYERS; ++l) {
        std::vector<uint16_t> q(size_t(batch) * T * HQ * D);
        for (uint16_t &x : q)
          x = floatToHalf(std::normal_distribution<float>(0, 1)(rng));
        orDie(dq.upload(q.data(), q.size() * 2), "upload q");
        orDie(dout.fill16(0x7e00), "poison out");
        if (speculative)
          CHECK_KVARN(kvarn_step_verify(step, l, dq.address(), dout.address(), scale));
        else
          CHECK_KVARN(kvarn_step_decode(step, l, dq.address(), dout.address(), scale));
        CHECK_KVARN(kvarn_context_synchronize(ctx));
        std::vector<uint16_t> outHalf(q.size());
        orDie(dout.download(outHalf.data(), outHalf.size() * 2), "download out");
        std::vector<float> got(q.size());
        for (size_t i = 0; i < got.size(); ++i)
          got[i] = halfToFloat(outHalf[i]);

        // Held: the GPU cache of this layer as it is.
        std::vector<uint8_t> records(size_t(NUM_BLOCKS) * HK * layout.recordBytes);
        std::vector<uint16_t> pk(size_t(POOL_SLOTS) * G * HK * D), pv(pk.size());
        download(records.data(), bufs.cache + l * bufs.cache_layer_stride, records.size());
        download(pk.data(), bufs.pool_k + l * bufs.pool_layer_stride, pk.size() * 2);
        download(pv.data(), bufs.pool_v + l * bufs.pool_layer_stride, pv.size() * 2);
        // History: the same blocks rebuilt on the CPU from the true tokens.
        std::vector<uint8_t> hrec(records.size(), 0);
        std::vector<uint16_t> hpk(pk.size(), 0), hpv(pk.size(), 0);
        for (int b = 0; b < batch; ++b) {
          const Request &r = requests[ids[b]];
          int nb = (lens[b] + G - 1) / G;
          for (int i = 0; i < nb; ++i) {
            int32_t block = table[size_t(b) * MAX_BLOCKS + i];
            for (int h = 0; h < HK; ++h) {
              std::vector<uint16_t> kr(size_t(G) * D, 0), vr(size_t(G) * D, 0);
              for (int t = 0; t < G && i * G + t < lens[b]; ++t) {
                int p = i * G + t;
                const Token &kt = p < int(r.k.size()) ? r.k[p] : newK[b][p - r.k.size()];
                const Token &vt = p < int(r.v.size()) ? r.v[p] : newV[b][p - r.v.size()];
                rot.rotateHalf(&kt[(size_t(l) * HK + h) * D], &kr[size_t(t) * D]);
                rot.rotateHalf(&vt[(size_t(l) * HK + h) * D], &vr[size_t(t) * D]);
              }
              if (b2s[block] >= 0) {
                for (int t = 0; t < G; ++t)
                  for (int c = 0; c < D; ++c) {
                    size_t at = ((size_t(b2s[block]) * G + t) * HK + h) * D + c;
                    hpk[at] = kr[size_t(t) * D + c];
                    hpv[at] = vr[size_t(t) * D + c];
                  }
              } else {
                encodeRecord(layout, kr.data(), vr.data(),
                             &hrec[(size_t(block) * HK + h) * layout.recordBytes]);
              }
            }
          }
        }
        std::vector<float> wantHeld(got.size()), wantHistory(got.size());
        for (int which = 0; which < 2; ++which) {
          PagedCacheView view{&layout, HK, NUM_BLOCKS,
                              which ? hrec.data() : records.data(), b2s.data(),
                              POOL_SLOTS, which ? hpk.data() : pk.data(),
                              which ? hpv.data() : pv.data()};
          float *want = which ? wantHistory.data() : wantHeld.data();
          if (speculative) {
            VerifyBatchView vb{batch, HQ, T, q.data(), table.data(), MAX_BLOCKS,
                               ctxLens.data(), qLens.data(), scale};
            orDie(verifyAttention(view, vb, rot, want), "reference verify");
          } else {
            DecodeBatchView db{batch, HQ, q.data(), table.data(), MAX_BLOCKS,
                               lens.data(), scale};
            orDie(decodeAttention(view, db, rot, want), "reference decode");
          }
        }
        size_t rowElems = size_t(T) * HQ * D;
        for (int b = 0; b < batch; ++b) {
          size_t n = size_t(qLens[b]) * HQ * D; // unused draft rows skipped
          double eh = relL2(&got[b * rowElems], &wantHeld[b * rowElems], n);
          double ex = relL2(&got[b * rowElems], &wantHistory[b * rowElems], n);
          worstHeld = std::max(worstHeld, eh);
          worstHistory = std::max(worstHistory, ex);
          ++checks;
          if (!(eh <= kTolerance) || !(ex <= kTolerance)) {
            ++failures;
            std::printf("step %d layer %d request %lld (len %d, %d tokens): "
                        "error %.3g vs held, %.3g vs history\n",
                        s, l, (long long)ids[b], lens[b], qLens[b], eh, ex);
          }
        }
      }
      // Commit: decode accepts all; speculation a random prefix.
      std::vector<int32_t> accepted(ids.size());
      for (size_t i = 0; i < ids.size(); ++i)
        accepted[i] = speculative ? uniform(0, counts[i]) : counts[i];
      CHECK_KVARN(kvarn_step_commit(step, accepted.data()));
      for (size_t i = 0; i < ids.size(); ++i) {
        Request &r = requests[ids[i]];
        for (int t = 0; t < accepted[i]; ++t) {
          r.k.push_back(newK[i][t]);
          r.v.push_back(newV[i][t]);
        }
      }
      (speculative ? verifySteps : decodeSteps)++;
    }
    int32_t flushed = 0;
    CHECK_KVARN(kvarn_pool_flush(pool, &flushed));
    flushedBlocks += flushed;
    // Finish some, free finished ones now and then, preempt rarely.
    for (auto it = requests.begin(); it != requests.end();) {
      Request &r = it->second;
      if (r.live && !r.needsPrefill && uniform(0, 12) == 0) {
        CHECK_KVARN(kvarn_pool_finish(pool, it->first));
        r.live = false;
        r.k.resize(r.k.size() / G * G); // the partial block is dropped
        r.v.resize(r.k.size());
        ++finished;
      } else if (!r.live && uniform(0, 5) == 0) {
        CHECK_KVARN(kvarn_pool_free(pool, it->first));
        it = requests.erase(it);
        continue;
      } else if (r.live && !r.needsPrefill && uniform(0, 40) == 0) {
        CHECK_KVARN(kvarn_pool_preempt(pool, it->first));
        r.needsPrefill = true;
        ++preempted;
      }
      ++it;
    }
  }
  for (auto &[id, r] : requests)
    CHECK_KVARN(kvarn_pool_free(pool, id));
  CHECK_KVARN(kvarn_pool_flush(pool, nullptr));
  kvarn_pool_stats_t st;
  CHECK_KVARN(kvarn_pool_stats(pool, &st));
  bool allFree = st.free_blocks == NUM_BLOCKS && st.free_slots == POOL_SLOTS &&
                 st.num_requests == 0;
  std::printf("serving-loop: %d decode and %d speculative steps, %d checks, "
              "%ld blocks flushed, %d prefixes shared, %d finished, %d "
              "preempted\n",
              decodeSteps, verifySteps, checks, flushedBlocks, shared, finished,
              preempted);
  std::printf("serving-loop: worst relative error %.3g vs what the cache "
              "holds, %.3g vs the true history (bound %.0e); free lists %s\n",
              worstHeld, worstHistory, kTolerance,
              allFree ? "complete" : "INCOMPLETE");
  CHECK_KVARN(kvarn_step_destroy(step));
  CHECK_KVARN(kvarn_pool_destroy(pool));
  CHECK_KVARN(kvarn_context_destroy(ctx));
  bool ok = failures == 0 && allFree && checks > 0;
  std::printf("serving-loop: %s\n", ok ? "PASS" : "FAIL");
  return ok ? 0 : 1;
}
