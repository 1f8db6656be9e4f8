#!/usr/bin/env python3
"""MLA golden cases made by the public KVarN reference's own MLA code.

Runs on the GPU machine beside kvarn, never part of it: the reference's
serving flush (TritonMLAImpl._kvarn_flush_tile on an already rotated pool
tile) and its decode kernel (_kvarn_mla_tile_decode_kernel, plus the grouped
split-K kernels its forward_mqa launches) are taken from its triton_mla.py
(huawei-csl/KVarN as mirrored in ytwang13/KVarN-FP, commit 115437d) at run
time, by name, into a scratch module; its Sinkhorn comes from the peer
layout of get_peer.sh (--peer-src). Writes, per case, a directory in the
format of test/data/golden (case.json and raw little-endian .bin files):

  flush_mla_k4_g128_r512_e64_<tag>: lat_rot [tiles, G, R] fp16 (the pool's
      rotated rows), rope [tiles, G, E] fp16, records_peer [tiles, REC] u8.
  decode_mla_k4_g128_r512_e64_h<H>_<tag>: q [B, H, R + E] f32 (absorbed,
      un-rotated latent part, then rope), block_table [B, max_blocks] i32,
      seq_lens [B] i32, block_to_slot [num_blocks] i32, kv_cache
      [num_blocks, REC] u8 (the reference's records), pool_lat [slots, G, R]
      and pool_rope [slots, G, E] fp16, out_exact [B, H, R] f32 (fp64
      attention over the dequantized cache, in the model's frame),
      out_peer [B, H, R] f32 (the reference's kernels, un-rotated in fp64).

  mla_golden.py --triton-mla FILE --peer-src DIR --out DIR [--tag a] [--seed N]
"""
import argparse
import ast
import importlib.util
import json
import os
import sys
import tempfile

import numpy as np
import torch

R, E, G, BITS, ITERS = 512, 64, 128, 4, 16


def extract(triton_mla_path):
    """The reference's MLA layout, flush and decode kernels, by name."""
    src = open(triton_mla_path).read()
    tree = ast.parse(src)
    want = {"kvarn_mla_tile_layout", "_kvarn_mla_tile_decode_kernel",
            "_kvarn_mla_grouped_stage1", "_kvarn_mla_splitk_stage2"}
    methods = {"_kvarn_hadamard", "_kvarn_flush_tile"}
    parts = ["import torch\nimport triton\nimport triton.language as tl\n"]
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name in want:
            parts.append(ast.get_source_segment(src, node, padded=True))
            for deco in node.decorator_list:  # keep @triton.jit
                if ast.get_source_segment(src, deco).endswith("jit"):
                    parts[-1] = "@triton.jit\n" + parts[-1]
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name in methods:
                    seg = ast.get_source_segment(src, item)
                    parts.append("\n".join(l[4:] if l.startswith("    ") else l
                                           for l in seg.splitlines()))
    text = "\n\n".join(parts) + "\n"
    missing = [n for n in want | methods if f"def {n}(" not in text]
    if missing:
        sys.exit(f"mla_golden: not found in {triton_mla_path}: {missing}")
    path = os.path.join(tempfile.mkdtemp(), "kvarn_mla_peer.py")
    open(path, "w").write(text)
    spec = importlib.util.spec_from_file_location("kvarn_mla_peer", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class FlushSelf:
    """What _kvarn_flush_tile reads of its TritonMLAImpl."""
    _kvarn_bits = BITS
    _kvarn_H = None


def realistic_latent(gen, tokens):
    """RMS-normed latents: per-channel gains with a few outlier channels."""
    gains = torch.exp(0.5 * torch.randn(R, generator=gen))
    gains[torch.randint(0, R, (4,), generator=gen)] *= 6.0
    tok = torch.exp(0.3 * torch.randn(tokens, 1, generator=gen))
    return torch.randn(tokens, R, generator=gen) * gains * tok


def write(case_dir, meta, arrays):
    os.makedirs(case_dir, exist_ok=True)
    for name, a in arrays.items():
        a = a.detach().cpu().contiguous()
        if a.dtype == torch.float16:
            a.view(torch.int16).numpy().tofile(os.path.join(case_dir, name + ".bin"))
        else:
            a.numpy().tofile(os.path.join(case_dir, name + ".bin"))
        meta.setdefault("tensors", {})[name] = {
            "file": name + ".bin", "dtype": str(a.dtype).replace("torch.", ""),
            "shape": list(a.shape)}
    with open(os.path.join(case_dir, "case.json"), "w") as f:
        json.dump(meta, f, indent=1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--triton-mla", required=True)
    ap.add_argument("--peer-src", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--tag", default="a")
    ap.add_argument("--seed", type=int, default=None)
    args = ap.parse_args()
    sys.path.insert(0, args.peer_src)
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "little")
    print(f"mla_golden: seed {seed}")
    gen = torch.Generator().manual_seed(seed)
    peer = extract(args.triton_mla)
    dev = "cuda"
    NB, SC, ZP, SR, RP, REC, _ = peer.kvarn_mla_tile_layout(R, E, G, BITS)
    me = FlushSelf()
    H = peer._kvarn_hadamard(me, R, dev, torch.float32)  # [R, R] fp32

    def flush(lat_rot16, rope16):
        """The reference's serving flush of one pool tile -> record bytes."""
        cache = torch.zeros(1, REC, dtype=torch.uint8, device=dev)
        peer._kvarn_flush_tile(me, lat_rot16, rope16, cache, 0, already_rotated=True)
        return cache[0]

    def dequant(rec):
        """The serving code's dequantization (forward_mqa's unpack), fp64."""
        pk = rec[:NB].view(G, R // 2)
        qd = torch.empty(G, R, dtype=torch.float64, device=dev)
        qd[:, 0::2] = (pk & 0xF).double()
        qd[:, 1::2] = (pk >> 4).double()
        sc = rec[SC:SC + R * 2].view(torch.float16).double()
        zp = rec[ZP:ZP + R * 2].view(torch.float16).double()
        pt = rec[SR:SR + G * 2].view(torch.float16).double()
        rope = rec[RP:RP + G * E * 2].view(torch.float16).reshape(G, E).double()
        return (qd * sc[None, :] + zp[None, :]) * pt[:, None], rope

    common = {"preset": "kvarn_mla_k4_g128", "kv_lora_rank": R, "rope_dim": E,
              "group": G, "bits": BITS, "sinkhorn_iters": ITERS,
              "record_bytes": REC, "seed": seed,
              "reference": "huawei-csl/KVarN (ytwang13/KVarN-FP) 115437d, "
                           "vllm/v1/attention/backends/mla/triton_mla.py"}

    # Flush: tiles of pool rows (rotated, fp16) through the serving flush.
    tiles = 8
    lat_rot = torch.stack([(realistic_latent(gen, G).to(dev) @ H).half()
                           for _ in range(tiles)])
    rope = (torch.randn(tiles, G, E, generator=gen)).half().to(dev)
    records = torch.stack([flush(lat_rot[i], rope[i]) for i in range(tiles)])
    name = f"flush_mla_k4_g128_r{R}_e{E}_{args.tag}"
    write(os.path.join(args.out, name), dict(common, kind="flush", tiles=tiles),
          {"lat_rot": lat_rot, "rope": rope, "records_peer": records})
    print(f"mla_golden: {name}: {tiles} tiles")

    # Decode: full blocks flushed, each request's partial last block in the
    # pool; block ids shuffled.
    for heads, seq_lens in ((16, [3 * G + 37, 1, 5 * G, G + 1]),
                            (128, [2 * G + 100, 4 * G - 3])):
        B = len(seq_lens)
        nblk = [(n + G - 1) // G for n in seq_lens]
        num_blocks = sum(nblk) + 3
        max_blocks = max(nblk)
        perm = torch.randperm(num_blocks, generator=gen)
        table = torch.full((B, max_blocks), -1, dtype=torch.int32)
        b2s = torch.full((num_blocks,), -1, dtype=torch.int32)
        cache = torch.zeros(num_blocks, REC, dtype=torch.uint8, device=dev)
        slots = sum(1 for n in seq_lens if n % G)
        pool_lat = torch.zeros(max(slots, 1), G, R, dtype=torch.float16, device=dev)
        pool_rope = torch.zeros(max(slots, 1), G, E, dtype=torch.float16, device=dev)
        lat_true = torch.zeros(num_blocks, G, R, dtype=torch.float64, device=dev)
        rope_true = torch.zeros(num_blocks, G, E, dtype=torch.float64, device=dev)
        k, slot = 0, 0
        for b, n in enumerate(seq_lens):
            for j in range(nblk[b]):
                bid = int(perm[k]); k += 1
                table[b, j] = bid
                lr = (realistic_latent(gen, G).to(dev) @ H).half()
                rp = torch.randn(G, E, generator=gen).half().to(dev)
                if (j + 1) * G <= n:
                    cache[bid] = flush(lr, rp)
                    lat_true[bid], rope_true[bid] = dequant(cache[bid])
                else:
                    b2s[bid] = slot
                    pool_lat[slot], pool_rope[slot] = lr, rp
                    lat_true[bid], rope_true[bid] = lr.double(), rp.double()
                    slot += 1
        scale = 1.0 / (128 + E) ** 0.5
        q = torch.randn(B, heads, R + E, generator=gen) * 0.5
        q = q.to(dev)
        # Exact: fp64 attention in the model's frame over what the cache holds.
        Hd = H.double()
        out_exact = torch.zeros(B, heads, R, dtype=torch.float64, device=dev)
        for b, n in enumerate(seq_lens):
            lat = torch.cat([lat_true[int(table[b, j])] for j in range(nblk[b])])[:n]
            rp = torch.cat([rope_true[int(table[b, j])] for j in range(nblk[b])])[:n]
            keys = lat @ Hd.t()  # un-rotated latent
            s = (q[b, :, :R].double() @ keys.t() + q[b, :, R:].double() @ rp.t()) * scale
            out_exact[b] = torch.softmax(s, dim=-1) @ keys
        # The reference: its forward_mqa's launches (grouped split-K when the
        # context is long, else the single kernel), on a bf16 rotated query.
        Qb = torch.cat([(q[:, :, :R].bfloat16() @ H.bfloat16()), q[:, :, R:].bfloat16()],
                       dim=-1).contiguous()
        O = torch.empty(B, heads, R, dtype=torch.float32, device=dev)
        L = torch.empty(B, heads, dtype=torch.float32, device=dev)
        bt, sl, b2 = table.to(dev), torch.tensor(seq_lens, dtype=torch.int32, device=dev), b2s.to(dev)
        NSPL, HGROUP = 16, 16
        partO = torch.empty(B, heads, NSPL, R, dtype=torch.float32, device=dev)
        partL = torch.empty(B, heads, NSPL, dtype=torch.float32, device=dev)
        flat = cache.reshape(-1)
        peer._kvarn_mla_grouped_stage1[(B, (heads + HGROUP - 1) // HGROUP, NSPL)](
            Qb, flat, pool_lat, pool_rope, bt, sl, b2, partO, partL, scale,
            Qb.stride(0), Qb.stride(1), bt.stride(0),
            partO.stride(0), partO.stride(1), partO.stride(2), partL.stride(0), partL.stride(1),
            pool_lat.stride(0), pool_lat.stride(1), pool_rope.stride(0), pool_rope.stride(1),
            H=heads, HGROUP=HGROUP, R=R, ROPE=E, G=G, NB=NB, SC=SC, ZP=ZP, SR=SR, RP=RP,
            REC=REC, BLOCK_N=32, NUM_SPLITS=NSPL, NUM_BLOCKS_LOOKUP=num_blocks,
            num_warps=8, num_stages=2)
        peer._kvarn_mla_splitk_stage2[(B, heads)](
            partO, partL, O, L, partO.stride(0), partO.stride(1), partO.stride(2),
            partL.stride(0), partL.stride(1), O.stride(0), O.stride(1), L.stride(0),
            R=R, NUM_SPLITS=NSPL)
        torch.cuda.synchronize()
        out_peer = O.double() @ Hd.t()
        rel = ((out_peer - out_exact).norm() / out_exact.norm()).item()
        name = f"decode_mla_k4_g128_r{R}_e{E}_h{heads}_{args.tag}"
        write(os.path.join(args.out, name),
              dict(common, kind="decode", batch=B, num_heads=heads,
                   softmax_scale=scale, max_blocks=max_blocks,
                   num_blocks=num_blocks, pool_slots=int(pool_lat.shape[0]),
                   peer_rel_l2_vs_exact=rel),
              {"q": q.float(), "block_table": table, "seq_lens": sl,
               "block_to_slot": b2s, "kv_cache": cache, "pool_lat": pool_lat,
               "pool_rope": pool_rope, "out_exact": out_exact.float(),
               "out_peer": out_peer.float()})
        print(f"mla_golden: {name}: seq_lens {seq_lens}; the reference's decode "
              f"vs exact fp64: rel L2 {rel:.2e}")


if __name__ == "__main__":
    main()
