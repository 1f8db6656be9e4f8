#!/usr/bin/env python3
"""Capacity and decode time of models whose layers are not all alike
(issue 17): a Gemma-3-like layout (5 sliding-window layers of 1024 tokens,
kept in fp16, per full-attention layer, quantized) and a hybrid layout (1
attention layer in 4; the others, Mamba or linear attention, hold no KV),
at 32K context, in kvarn's managed pool with per-layer kinds.

    KVARN_LIBRARY=.../libkvarn.so.0 PYTHONPATH=python \\
        python3 bench/layer_layouts.py [--context 32768] [--batch 4] [--json F]

Capacity: kvarn.capacity_plan_layers at a 60 GB budget (tokens, the ratio
against the same layers in fp16). Decode time: the attention of one
decode step over every layer that has KV, in the pool (the decode launches
alone, and the whole step: write_kv of the new token, decode of every
layer, commit), against PyTorch SDPA over 16-bit K/V of the same layers (a full-attention layer over the whole context, a
sliding-window layer over its last `window` tokens), CUDA-event medians in
one process.
"""

import argparse
import json
import statistics

import torch
import torch.nn.functional as F

import kvarn

PRESET = "kvarn_k4v2_g128"
G = 128


def layouts(window):
    gemma = ([{"kind": "fp16", "window": window}] * 5 + ["kvarn"]) * 4
    hybrid = (["kvarn"] + ["absent"] * 3) * 6
    # name, layers, Hk, Hq, D
    return [("gemma3-like (5 x window %d fp16 : 1 full kvarn)" % window,
             gemma, 16, 32, 128),
            ("hybrid (1 kvarn attention layer in 4)", hybrid, 8, 32, 128)]


def kind_of(layer):
    return layer if isinstance(layer, str) else layer["kind"]


def window_of(layer):
    return 0 if isinstance(layer, str) else layer.get("window", 0)


def timed(fn, reps=20, warmup=3):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(True), torch.cuda.Event(True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return statistics.median(times)


def run(name, layers, hk, hq, d, context, batch, budget, dev):
    n = len(layers)
    plan = kvarn.capacity_plan_layers(layers, d, hk, hq, budget, batch,
                                      preset=PRESET)
    out = {"layout": name, "layers": n, "num_kv_heads": hk, "num_q_heads": hq,
           "head_dim": d, "context": context, "batch": batch,
           "capacity_tokens": plan.tokens, "fp16_tokens": plan.fp16_tokens,
           "ratio_vs_fp16": plan.ratio_vs_fp16,
           "requests_at_context": plan.tokens // context,
           "fp16_requests_at_context": plan.fp16_tokens // context}
    print("%s: %d layers; at %.0f GB: %d tokens vs %d in fp16 (%.2fx), %d vs "
          "%d requests of %d tokens" % (
              name, n, budget / 1e9, plan.tokens, plan.fp16_tokens,
              plan.ratio_vs_fp16, out["requests_at_context"],
              out["fp16_requests_at_context"], context))

    ctx = kvarn.Context()
    blocks_per_req = context // G + 2
    num_blocks = batch * blocks_per_req + 4
    pool = kvarn.Pool(ctx, n, hk, hq, d, num_blocks, 2 * batch + 4, batch,
                      blocks_per_req, preset=PRESET, layers=layers)
    live = [l for l in range(n) if kind_of(layers[l]) != "absent"]
    ids = list(range(batch))
    for r in ids:
        pool.add_request(r)
    step = pool.step()
    chunk = torch.randn(batch * G, hk, d, device=dev, dtype=torch.float16)
    for _ in range(context // G):
        step.begin(ids, [G] * batch)
        for l in live:
            step.write_kv(l, chunk, chunk)
        step.commit()
        pool.flush()
    kv1 = torch.randn(batch, hk, d, device=dev, dtype=torch.float16)
    q = torch.randn(batch, hq, d, device=dev, dtype=torch.float16)
    o = torch.empty_like(q)
    scale = d ** -0.5

    def kvarn_step():
        step.begin(ids, [1] * batch)
        for l in live:
            step.write_kv(l, kv1, kv1)
            step.decode(l, q, o, scale)
        step.commit()  # the context grows by one token a step (23 in all)

    kvarn_ms = timed(kvarn_step)

    # The attention alone, like for like with SDPA below: the decode of
    # every layer with KV, repeated within one step (decode only reads the
    # pool), the step's write and commit outside the timing.
    step.begin(ids, [1] * batch)
    for l in live:
        step.write_kv(l, kv1, kv1)

    def kvarn_decode():
        for l in live:
            step.decode(l, q, o, scale)

    kvarn_decode_ms = timed(kvarn_decode)
    step.commit()

    # SDPA over 16-bit K/V: one tensor per layer kind (timing does not depend
    # on the contents), GQA through enable_gqa.
    kf = torch.randn(batch, hk, context, d, device=dev, dtype=torch.bfloat16)
    qs = torch.randn(batch, hq, 1, d, device=dev, dtype=torch.bfloat16)
    windows = {window_of(layers[l]) for l in live if window_of(layers[l])}
    kw = {w: kf[:, :, -w:].contiguous() for w in windows}

    def sdpa_step():
        for l in live:
            w = window_of(layers[l])
            k = kw[w] if w else kf
            F.scaled_dot_product_attention(qs, k, k, enable_gqa=True)

    sdpa_ms = timed(sdpa_step)
    del kf, kw
    out.update(kvarn_step_ms=kvarn_ms, kvarn_decode_ms=kvarn_decode_ms,
               sdpa_step_ms=sdpa_ms, layers_with_kv=len(live))
    print("  decode attention, batch %d at %d tokens, %d layers with KV: "
          "kvarn %.3f ms (decode only) vs SDPA %.3f ms: %.2fx; kvarn's whole "
          "step (write_kv + decode + commit) %.3f ms" % (
              batch, context, len(live), kvarn_decode_ms, sdpa_ms,
              sdpa_ms / kvarn_decode_ms, kvarn_ms))
    step.close()
    pool.close()
    ctx.close()
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--context", type=int, default=32768)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--window", type=int, default=1024)
    ap.add_argument("--budget-gb", type=float, default=60)
    ap.add_argument("--json")
    args = ap.parse_args()
    dev = "cuda"
    results = [run(*lay, args.context, args.batch, int(args.budget_gb * 1e9),
                   dev) for lay in layouts(args.window)]
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
