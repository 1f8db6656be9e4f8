#!/usr/bin/env python3
"""End-to-end decode throughput at a fixed KV-cache memory budget (issue 16,
part 3): model-shaped decode steps with random bf16 weights (the GEMMs run
by PyTorch), the KV cache either 16-bit K/V attended by PyTorch SDPA or
kvarn_k4v2_g128 in kvarn's managed pool (kvarn.torch.PagedKVCache). For
each, the largest batch whose whole context fits the budget, then ms per
decode step and tokens per second, and the capacity ratio.

    KVARN_LIBRARY=.../libkvarn.so.0 PYTHONPATH=python \\
        python3 bench/decode_e2e.py --model llama-3.1-8b --context 16384 \\
        --budget-gb 60 [--steps 20] [--json out.json]

What a step does, per layer: RMSNorm, the fused QKV GEMM, RoPE on q and k
(cos/sin of the position), the new token's K/V appended to the cache,
attention over the request's whole context, o_proj, RMSNorm, the gated MLP
(gate/up/down GEMMs); then the final norm and the LM head. One layer's
weights are shared by every layer (the per-layer weights are hundreds of MB,
far past the L2, so each layer still streams them from HBM; sharing keeps
Qwen3-32B's 64 layers within the GPU next to the cache budget). The cache
is filled with random K/V (kvarn: appended and flushed block by block, so
every full block but the sink is a record); its contents do not change
the timing. kvarn's bf16 activations are converted to fp16 at the pool's
boundary (the managed pool takes fp16; docs/pytorch.md). The fp16 side's
cache is 16-bit (bf16 here, the model's dtype: the same bytes as fp16).

--tp N runs the same over N GPUs, one process each (issue 19): attention
heads, the MLP's intermediate features and the vocabulary split Megatron's
way (QKV, gate/up and the head by columns; o_proj and down by rows, their
partial sums all-reduced over NCCL, NVLink multicast off), each rank with
its share of the KV heads in its own cache and a budget of --budget-gb per
GPU. Rank 0 prints; tokens/s are the batch's, every rank serving all of it.
"""

import argparse
import json
import math
import os
import socket
import sys
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

import kvarn
import kvarn.torch as kt

MODELS = {
    # layers, hidden, q heads, kv heads, head_dim, intermediate, vocab
    "llama-3.1-8b": (32, 4096, 32, 8, 128, 14336, 128256),
    "qwen3-32b": (64, 5120, 64, 8, 128, 25600, 151936),
}
PRESET = "kvarn_k4v2_g128"


class Shapes:
    """The model's shapes, or one tensor-parallel rank's share of them
    (heads, intermediate features and vocabulary divided by `tp`)."""

    def __init__(self, name, layers=None, tp=1):
        (self.layers, self.hidden, self.hq, self.hk, self.d, self.inter,
         self.vocab) = MODELS[name]
        if layers:
            self.layers = layers
        if self.hk % tp or self.inter % tp or self.vocab % tp:
            raise SystemExit("decode_e2e: --tp %d does not divide %s's KV "
                             "heads, MLP or vocabulary" % (tp, name))
        self.hq, self.hk = self.hq // tp, self.hk // tp
        self.inter, self.vocab = self.inter // tp, self.vocab // tp
        self.name = name


class Weights:
    """One decoder layer's weights (shared by all layers) and the head."""

    def __init__(self, s, dev):
        def w(o, i):
            return torch.randn(o, i, device=dev, dtype=torch.bfloat16) / math.sqrt(i)
        self.qkv = w((s.hq + 2 * s.hk) * s.d, s.hidden)
        self.o = w(s.hidden, s.hq * s.d)
        self.gate_up = w(2 * s.inter, s.hidden)
        self.down = w(s.hidden, s.inter)
        self.norm = torch.ones(s.hidden, device=dev, dtype=torch.bfloat16)
        self.head = w(s.vocab, s.hidden)


def rms(x, w):
    return F.rms_norm(x, (x.shape[-1],), w, 1e-6)


def rope(x, cos, sin):
    x1, x2 = x.chunk(2, -1)
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), -1)


def all_reduce(t):
    """The sum over the tensor-parallel ranks (none: t itself)."""
    if dist.is_initialized():
        dist.all_reduce(t)
    return t


def step(s, w, x, pos, attend):
    """One decode step for the batch: x [B, hidden] -> logits [B, vocab]
    (this rank's share of the vocabulary).
    attend(layer, q [B, Hq, D], k [B, Hk, D], v [B, Hk, D]) -> [B, Hq, D]."""
    b = x.shape[0]
    inv = 1.0 / (10000.0 ** (torch.arange(0, s.d, 2, device=x.device) / s.d))
    ang = pos[:, None].float() * inv[None]
    cos = ang.cos().to(x.dtype)[:, None, :]
    sin = ang.sin().to(x.dtype)[:, None, :]
    for layer in range(s.layers):
        h = rms(x, w.norm)
        qkv = h @ w.qkv.T
        q, k, v = qkv.split([s.hq * s.d, s.hk * s.d, s.hk * s.d], -1)
        q = rope(q.view(b, s.hq, s.d), cos, sin)
        k = rope(k.view(b, s.hk, s.d), cos, sin)
        a = attend(layer, q, k, v.reshape(b, s.hk, s.d))
        x = x + all_reduce(a.reshape(b, -1) @ w.o.T)
        h = rms(x, w.norm)
        g, u = (h @ w.gate_up.T).chunk(2, -1)
        x = x + all_reduce((F.silu(g) * u) @ w.down.T)
    return rms(x, w.norm) @ w.head.T


def fp16_batch(s, context, budget):
    per_request = context * s.layers * 2 * s.hk * s.d * 2
    return budget // per_request


def kvarn_batch(s, context, budget):
    """The largest batch whose blocks fit the plan for that many requests."""
    blocks = -(-context // 128)
    lo, hi = 0, 1 << 16
    while lo < hi:
        mid = (lo + hi + 1) // 2
        try:
            plan = kvarn.capacity_plan(PRESET, s.d, s.layers, s.hk, budget, mid)
        except kvarn.KvarnError:  # not even the pool slots of mid requests
            plan = None
        if plan is not None and plan.num_blocks >= mid * blocks:
            lo = mid
        else:
            hi = mid - 1
    return lo, kvarn.capacity_plan(PRESET, s.d, s.layers, s.hk, budget, lo)


def time_steps(fn, steps, warmup):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / steps


def run_fp16(s, w, batch, context, steps, warmup, dev):
    total = context + steps + warmup
    cache = [(torch.randn(batch, s.hk, total, s.d, device=dev, dtype=torch.bfloat16),
              torch.randn(batch, s.hk, total, s.d, device=dev, dtype=torch.bfloat16))
             for _ in range(s.layers)]
    state = {"len": context}

    def attend(layer, q, k, v):
        kc, vc = cache[layer]
        n = state["len"]
        kc[:, :, n] = k
        vc[:, :, n] = v
        # The GQA query heads of one KV head as that head's query rows (the
        # one new token attends to every cached one: no mask), so that flash
        # attention runs with no enable_gqa and no K/V expansion; the flash
        # backend forced, so a fallback to the math kernel is an error, not
        # a silently slower baseline.
        qg = q.view(q.shape[0], s.hk, s.hq // s.hk, s.d)
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            out = F.scaled_dot_product_attention(qg, kc[:, :, :n + 1],
                                                 vc[:, :, :n + 1])
        return out.reshape(q.shape)

    x = torch.randn(batch, s.hidden, device=dev, dtype=torch.bfloat16)

    def one():
        pos = torch.full((batch,), state["len"], device=dev)
        step(s, w, x, pos, attend)
        state["len"] += 1

    with torch.no_grad():
        t = time_steps(one, steps, warmup)
    del cache
    return t


def run_kvarn(s, w, batch, plan, context, steps, warmup, dev):
    blocks = -(-(context + steps + warmup) // 128)
    cache = kt.PagedKVCache(s.layers, s.hk, s.hq, s.d, plan.num_blocks,
                            plan.pool_slots, batch, blocks, preset=PRESET,
                            device=dev, dtype=torch.bfloat16)
    ids = list(range(batch))
    for r in ids:
        cache.add_request(r)
    # Fill: 128 tokens per request per step, flushed every step (one new
    # block per request at a time: the planned pool slots suffice).
    chunk = torch.randn(batch * 128, s.hk, s.d, device=dev, dtype=torch.bfloat16)
    for _ in range(context // 128):
        cache.begin(ids, [128] * batch)
        for layer in range(s.layers):
            cache.write_kv(layer, chunk, chunk)
        cache.commit()
        cache.flush()
    state = {"len": context // 128 * 128}

    def attend(layer, q, k, v):
        cache.write_kv(layer, k.contiguous(), v.contiguous())
        return cache.decode(layer, q.contiguous())

    x = torch.randn(batch, s.hidden, device=dev, dtype=torch.bfloat16)

    def one():
        cache.begin(ids, [1] * batch)
        pos = torch.full((batch,), state["len"], device=dev)
        step(s, w, x, pos, attend)
        cache.commit()
        cache.flush()
        state["len"] += 1

    with torch.no_grad():
        t = time_steps(one, steps, warmup)
    cache.close()
    return t


def run(a, rank=0):
    """Plans and times both caches on GPU `rank`; rank 0 reports."""
    dev = torch.device("cuda", rank)
    torch.cuda.set_device(dev)
    s = Shapes(a.model, a.layers, a.tp)
    budget = int(a.budget_gb * 1e9)
    w = Weights(s, dev)
    b16 = fp16_batch(s, a.context + a.steps + a.warmup, budget)
    bkv, plan = kvarn_batch(s, a.context + a.steps + a.warmup, budget)
    if a.max_batch:
        b16, bkv = min(b16, a.max_batch), min(bkv, a.max_batch)
    report = rank == 0
    row = dict(model=s.name, layers=s.layers, context=a.context, tp=a.tp,
               budget_gb=a.budget_gb, gpu=torch.cuda.get_device_name(dev),
               fp16_batch=b16, kvarn_batch=bkv,
               capacity_ratio=bkv / b16 if b16 else float("inf"))
    if report:
        print("%s (%d layers, TP %d), %d context, %.0f GB KV budget per GPU: "
              "batch %d (16-bit K/V) vs %d (kvarn k4v2), capacity %.2fx"
              % (s.name, s.layers, a.tp, a.context, a.budget_gb, b16, bkv,
                 row["capacity_ratio"]), flush=True)
    if b16:
        t = run_fp16(s, w, b16, a.context, a.steps, a.warmup, dev)
        row.update(fp16_ms=t * 1e3, fp16_tok_s=b16 / t)
        if report:
            print("  SDPA  batch %4d: %.2f ms/step, %.0f tokens/s"
                  % (b16, t * 1e3, b16 / t), flush=True)
        torch.cuda.empty_cache()
    if bkv:
        t = run_kvarn(s, w, bkv, plan, a.context, a.steps, a.warmup, dev)
        row.update(kvarn_ms=t * 1e3, kvarn_tok_s=bkv / t)
        if report:
            print("  kvarn batch %4d: %.2f ms/step, %.0f tokens/s"
                  % (bkv, t * 1e3, bkv / t), flush=True)
    if "fp16_tok_s" in row and "kvarn_tok_s" in row:
        row["throughput_ratio"] = row["kvarn_tok_s"] / row["fp16_tok_s"]
        if report:
            print("  kvarn / SDPA tokens/s: %.2fx" % row["throughput_ratio"])
    if report and a.json:
        with open(a.json, "w") as f:
            json.dump(row, f, indent=1)


def tp_worker(rank, a, port):
    torch.cuda.set_device(rank)
    dist.init_process_group("nccl", init_method="tcp://127.0.0.1:%d" % port,
                            rank=rank, world_size=a.tp)
    try:
        run(a, rank)
    finally:
        dist.destroy_process_group()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=sorted(MODELS), default="llama-3.1-8b")
    p.add_argument("--layers", type=int, default=0,
                   help="override the layer count (a reduced run)")
    p.add_argument("--context", type=int, default=16384)
    p.add_argument("--budget-gb", type=float, default=60.0,
                   help="KV-cache budget per GPU")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--max-batch", type=int, default=0,
                   help="cap both batches (a reduced run)")
    p.add_argument("--tp", type=int, default=1,
                   help="tensor-parallel ranks, one GPU and process each")
    p.add_argument("--json", default="")
    a = p.parse_args()
    if a.tp == 1:
        run(a)
        return 0
    if torch.cuda.device_count() < a.tp:
        print("decode_e2e: --tp %d needs %d GPUs, this machine has %d: skipped"
              % (a.tp, a.tp, torch.cuda.device_count()))
        return 77
    os.environ.setdefault("NCCL_NVLS_ENABLE", "0")  # multicast stays off
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.spawn(tp_worker, args=(a, port), nprocs=a.tp, join=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
