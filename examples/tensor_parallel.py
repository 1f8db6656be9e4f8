#!/usr/bin/env python3
"""Tensor-parallel attention over kvarn's managed pool (issue 19).

Attention heads of a Qwen3-32B-shaped layer stack (64 query heads, 8 KV
heads, head_dim 128) are split across TP ranks, one process per GPU, each
with its own kvarn context and PagedKVCache holding its share of the KV
heads (and the query heads that read them). Every rank makes the same block
decisions: the requests, their lengths, the speculative acceptances,
finishes and flushes are a function of the seed alone. The loop runs
prefill, decode steps, speculative (verify) steps and flushes, and a request
that finishes makes room for a new one. Each step's attention outputs are
all-gathered over torch.distributed (NCCL, NVLink multicast off) into
[tokens, Hq, D] on every rank.

Rank 0 then checks them against the same loop on one GPU:
- bit for bit against one pool per rank's head slice run in this process
  (attention is per head, and a pool of the same heads makes the same
  launches: any difference is a device, process or gather fault);
- within 4e-4 relative L2 per step and layer against one pool holding
  every head (its decode may choose another split count for 8 KV heads than
  for 4, which changes only the order of fp32 sums).

    PYTHONPATH=python KVARN_LIBRARY=build/lib/libkvarn.so.0 \\
        python3 examples/tensor_parallel.py --tp 2 [--steps 24] [--seed S]

With fewer GPUs than --tp, --share-gpu puts every rank on GPU 0 and gathers
over gloo (the same code path otherwise), so the example runs on one GPU.
Exits 0 when every check holds."""

import argparse
import os
import random
import socket
import sys
import tempfile

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import kvarn.torch as kt

HQ, HK, D, LAYERS = 64, 8, 128, 2
PRESET = "kvarn_k4v2_g128"
NUM_BLOCKS, POOL_SLOTS, MAX_REQUESTS, MAX_BLOCKS = 512, 64, 16, 64
DRAFTS = 4  # tokens of a speculative step
TOLERANCE = 4e-4


def schedule(seed, steps):
    """The loop's steps, the same on every rank: a list of
    ("prefill" | "decode" | "verify", ids, counts, accepted or None,
    finished ids)."""
    rng = random.Random(seed)
    live, next_id, out = [], 0, []
    prompts = []
    for _ in range(4):
        live.append(next_id)
        prompts.append(rng.randint(1, 700))
        next_id += 1
    out.append(("prefill", list(live), prompts, None, []))
    for s in range(steps):
        kind = "verify" if s % 3 == 2 else "decode"
        counts = [DRAFTS if kind == "verify" else 1] * len(live)
        accepted = [rng.randint(1, DRAFTS) for _ in live] \
            if kind == "verify" else None
        finished = [live[0]] if s % 8 == 7 else []
        out.append((kind, list(live), counts, accepted, finished))
        for r in finished:
            live.remove(r)
            live.append(next_id)
            out.append(("prefill", [next_id], [rng.randint(1, 700)], None, []))
            next_id += 1
    return out


def inputs(seed, step, layer, tokens, rows, cols):
    """K, V [tokens, HK, D] and Q [rows, cols, HQ, D] of every head, fp16,
    from (seed, step, layer) alone."""
    g = torch.Generator().manual_seed(hash((seed, step, layer)) & (2**63 - 1))
    k = torch.randn(tokens, HK, D, generator=g).half()
    v = torch.randn(tokens, HK, D, generator=g).half()
    q = torch.randn(rows, cols, HQ, D, generator=g).half()
    return k, v, q


def run_loop(seed, steps, device, kv_heads):
    """The loop over a pool on `device` holding the KV heads in `kv_heads`
    (a range) and their query heads; returns every attention output, one
    CPU tensor [rows, cols, heads, D] per (step, layer)."""
    group = HQ // HK
    kv = slice(kv_heads.start, kv_heads.stop)
    qs = slice(kv_heads.start * group, kv_heads.stop * group)

    def local(t):
        return t.contiguous().to(device)

    with torch.cuda.device(device):
        cache = kt.PagedKVCache(LAYERS, kv.stop - kv.start, qs.stop - qs.start,
                                D, NUM_BLOCKS, POOL_SLOTS, MAX_REQUESTS,
                                MAX_BLOCKS, preset=PRESET, device=device)
        outs = []
        for i, (kind, ids, counts, accepted, finished) in \
                enumerate(schedule(seed, steps)):
            for r in ids if kind == "prefill" else []:
                cache.add_request(r)
            cache.begin(ids, counts)
            cols = DRAFTS if kind == "verify" else 1
            for layer in range(LAYERS):
                k, v, q = inputs(seed, i, layer, sum(counts), len(ids), cols)
                cache.write_kv(layer, local(k[:, kv]), local(v[:, kv]))
                if kind == "decode":
                    outs.append(cache.decode(layer, local(q[:, 0, qs]))
                                .unsqueeze(1))
                elif kind == "verify":  # every count is DRAFTS
                    outs.append(cache.verify(layer, local(q[:, :, qs])))
            cache.commit(accepted)
            for r in finished:
                cache.finish(r)
                cache.free(r)
            cache.flush()
        torch.cuda.synchronize(device)
        outs = [o.cpu() for o in outs]
        cache.close()
    return outs


def worker(rank, world, port, seed, steps, share_gpu, result_path):
    device = torch.device("cuda", 0 if share_gpu else rank)
    torch.cuda.set_device(device)
    backend = "gloo" if share_gpu else "nccl"
    dist.init_process_group(backend, init_method="tcp://127.0.0.1:%d" % port,
                            rank=rank, world_size=world)
    per = HK // world
    outs = run_loop(seed, steps, device, range(rank * per, (rank + 1) * per))
    gathered = []
    for o in outs:
        t = o if share_gpu else o.to(device)
        parts = [torch.empty_like(t) for _ in range(world)]
        dist.all_gather(parts, t)
        gathered.append(torch.cat([p.cpu() for p in parts], dim=2))
    if rank == 0:
        torch.save(gathered, result_path)
    dist.barrier()
    dist.destroy_process_group()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--tp", type=int, default=2)
    p.add_argument("--steps", type=int, default=24)
    p.add_argument("--seed", type=int,
                   default=int.from_bytes(os.urandom(4), "little"))
    p.add_argument("--share-gpu", action="store_true",
                   help="every rank on GPU 0, gathered over gloo")
    a = p.parse_args()
    print("tensor_parallel: --seed %d (tp %d, %d steps)" % (a.seed, a.tp,
                                                              a.steps))
    if HK % a.tp:
        sys.exit("tensor_parallel: --tp must divide the %d KV heads" % HK)
    gpus = torch.cuda.device_count()
    if gpus == 0:
        print("tensor_parallel: no GPU: skipped")
        sys.exit(77)
    if gpus < a.tp and not a.share_gpu:
        print("tensor_parallel: %d GPU(s) for --tp %d: skipped (--share-gpu "
              "runs every rank on GPU 0)" % (gpus, a.tp))
        sys.exit(77)
    # NVLink multicast (NVLS) stays off on the lent machines.
    os.environ.setdefault("NCCL_NVLS_ENABLE", "0")

    with tempfile.TemporaryDirectory() as tmp:
        result_path = os.path.join(tmp, "gathered.pt")
        mp.spawn(worker, args=(a.tp, free_port(), a.seed, a.steps,
                               a.share_gpu, result_path),
                 nprocs=a.tp, join=True)
        tp_outs = torch.load(result_path)

    device = torch.device("cuda", 0)
    per = HK // a.tp
    slices = [run_loop(a.seed, a.steps, device, range(r * per, (r + 1) * per))
              for r in range(a.tp)]
    one_gpu = [torch.cat(parts, dim=2) for parts in zip(*slices)]
    full = run_loop(a.seed, a.steps, device, range(HK))

    failures = 0
    worst = 0.0
    for i, (t, s, f) in enumerate(zip(tp_outs, one_gpu, full)):
        if not torch.equal(t, s):
            failures += 1
            print("output %d: TP differs from one GPU's head slices (max |d| "
                  "%g)" % (i, (t.float() - s.float()).abs().max().item()))
        err = ((t.float() - f.float()).norm() /
               f.float().norm().clamp_min(1e-30)).item()
        worst = max(worst, err)
        if err > TOLERANCE:
            failures += 1
            print("output %d: %.3g relative L2 from the pool of every head"
                  % (i, err))
    print("tensor_parallel: %d outputs; bit-identical to one GPU's head "
          "slices: %s; worst relative L2 against one pool of every head: "
          "%.3g (bound %g)" % (len(tp_outs), "yes" if failures == 0 else "no",
                               worst, TOLERANCE))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
