#!/usr/bin/env python3
"""MLA decode side by side, in one process: kvarn's, PyTorch's, the reference's.

Issue 18's benchmark. For DeepSeek-V2-Lite's latent (kv_lora_rank 512, rope
64) with 16 and 128 query heads, batch 1-64, context 4K-32K, one query token
per request over a paged cache whose blocks are all records:

  kvarn      kvarn.MlaKernels: mla_decode, or mla_decode_split + mla_combine
             with the runtime's split count (decode_split_count)
  torch      bf16 attention over the unquantized latent and rope keys
             ([B, T, R + E] contiguous; scores and output by matmul, so the
             latent is read twice), what the cache would be without KVarN
  reference  the public reference's own MLA decode kernels (its grouped
             split-K stage 1 and stage 2 as its forward_mqa launches them,
             taken from triton_mla.py by test/gpu/peer/mla_golden.py's
             extract) on the same record bytes; with --triton-mla and
             --peer-src only
  copy       a 1 GiB device-to-device copy: the rate the other rows are
             measured against (the records read once at that rate is the
             memory limit)
  tensor     an 8192^3 fp16 matmul (fp32 accumulation): the tensor-core
             rate the compute limit is measured against, the decode's
             multiply-adds (heads x tokens x (2 R + E), once; kvarn's f16
             hi + lo parts double them) at that rate. Where the compute
             limit passes the memory limit (128 heads: ~690 flops a
             record byte) no decoder reaches the memory limit; "%bound"
             is the larger limit over kvarn's time.

CUDA events, 3 warm-up calls, the median of 20; launches cycle through
copies of the cache (at least 256 MiB) so no launch finds the previous one's
bytes in L2. A benchmark: it asserts nothing. Needs torch with CUDA and
libkvarn.so (KVARN_LIBRARY or the package's directory).

  mla_decode.py [--triton-mla FILE --peer-src DIR] [--json FILE] [--only S]
"""
import argparse
import importlib.util
import json
import os
import sys

R, E, G = 512, 64, 128
POINTS = [(heads, batch, ctx) for heads in (16, 128) for batch in (1, 8, 32, 64)
          for ctx in (4096, 32768)]


def median_us(call, reps=20, warmup=3):
    import torch
    for _ in range(warmup):
        call()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start = torch.cuda.Event(enable_timing=True)
        stop = torch.cuda.Event(enable_timing=True)
        start.record()
        call()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop) * 1000.0)
    times.sort()
    return times[len(times) // 2]


def cycling(make, bytes_each, floor=256 << 20, most=16):
    """Copies enough to cycle through `floor` bytes, and a counter."""
    n = max(1, min(most, -(-floor // max(bytes_each, 1))))
    return [make() for _ in range(n)]


def records(torch, layout, num_blocks, gen):
    """Random codes with plausible fp16 scales, zeros and token scales."""
    rec = torch.randint(0, 256, (num_blocks, layout.record_bytes),
                        dtype=torch.uint8, generator=gen)

    def halves(at, n, value):
        rec[:, at:at + 2 * n] = torch.full((num_blocks, n), value,
                                           dtype=torch.float16).view(torch.uint8)
    halves(layout.scale_offset, R, 0.05)
    halves(layout.zero_offset, R, -0.4)
    halves(layout.token_scale_offset, G, 1.0)
    halves(layout.rope_offset, G * E, 0.1)
    return rec.cuda()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--triton-mla", help="the reference's triton_mla.py")
    parser.add_argument("--peer-src", help="the peer layout of get_peer.sh")
    parser.add_argument("--json", help="write the figures here")
    parser.add_argument("--only", default="", help="rows whose name has this")
    args = parser.parse_args()
    try:
        import torch
    except ImportError:
        print("mla_decode: no torch here: skipped")
        return 77
    if not torch.cuda.is_available():
        print("mla_decode: no CUDA GPU: skipped")
        return 77
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "python"))
    import kvarn

    peer = None
    if args.triton_mla and args.peer_src:
        here = os.path.dirname(os.path.abspath(__file__))
        path = os.path.join(here, "..", "test", "gpu", "peer", "mla_golden.py")
        spec = importlib.util.spec_from_file_location("mla_golden", path)
        golden = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(golden)
        sys.path.insert(0, args.peer_src)
        peer = golden.extract(args.triton_mla)

    dev = torch.device("cuda")
    stream = torch.cuda.current_stream()
    ctx = kvarn.Context(device=torch.cuda.current_device(),
                        stream=stream.cuda_stream)
    layout = kvarn.mla_record_layout("kvarn_mla_k4_g128", R, E)
    gen = torch.Generator().manual_seed(int.from_bytes(os.urandom(4), "little"))

    # The copy rate, read + write.
    src = torch.empty(1 << 30, dtype=torch.uint8, device=dev)
    dst = torch.empty_like(src)
    copy_us = median_us(lambda: dst.copy_(src))
    copy_gbs = 2 * src.numel() / copy_us / 1e3
    del src, dst
    # The tensor-core rate: fp16 products, fp32 accumulation (cuBLAS).
    n = 8192
    a = torch.randn(n, n, dtype=torch.float16, device=dev)
    bm = torch.randn(n, n, dtype=torch.float16, device=dev)
    mm_us = median_us(lambda: torch.matmul(a, bm))
    tflops = 2 * n ** 3 / mm_us / 1e6
    del a, bm
    print(f"MLA decode on {torch.cuda.get_device_name()} (torch "
          f"{torch.__version__}); copy {copy_gbs:.0f} GB/s; fp16 matmul "
          f"{tflops:.0f} TFLOP/s")
    print(f"{'what':<34} {'kvarn us':>9} {'%copy':>6} {'limit us':>8} "
          f"{'%bound':>6} {'splits':>6} {'torch us':>9} {'ref us':>8} "
          f"{'torch/kvarn':>11} {'ref/kvarn':>9}")
    rows = []
    kernels = {}
    for heads, batch, context in POINTS:
        what = f"mla decode H={heads} {batch} x {context}"
        if args.only and args.only not in what:
            continue
        if heads not in kernels:
            kernels[heads] = kvarn.MlaKernels(ctx, R, E, heads)
            kernels[heads].load()
        k = kernels[heads]
        per_req = context // G
        num_blocks = batch * per_req
        table = torch.randperm(num_blocks, generator=gen).to(torch.int32)
        table = table.reshape(batch, per_req).to(dev)
        lens = torch.full((batch,), context, dtype=torch.int32, device=dev)
        to_slot = torch.full((num_blocks,), -1, dtype=torch.int32, device=dev)
        pool_lat = torch.zeros(1, G, R, dtype=torch.float16, device=dev)
        pool_pe = torch.zeros(1, G, E, dtype=torch.float16, device=dev)
        caches = cycling(lambda: records(torch, layout, num_blocks, gen),
                         num_blocks * layout.record_bytes)
        q = torch.randn(batch, heads, R + E, device=dev).half()
        out = torch.empty(batch, heads, R, dtype=torch.float16, device=dev)
        scale = 1.0 / (128 + E) ** 0.5
        splits = k.decode_split_count(batch, per_req)
        part_out = part_lse = None
        if splits > 1:
            ob, lb = kvarn.mla_decode_split_scratch_bytes(batch, heads, R)
            part_out = torch.empty(ob, dtype=torch.uint8, device=dev)
            part_lse = torch.empty(lb, dtype=torch.uint8, device=dev)
        turn = [0]

        def kvarn_call():
            c = caches[turn[0] % len(caches)]
            turn[0] += 1
            if splits == 1:
                k.decode(q, table, lens, to_slot, c, pool_lat, pool_pe, out,
                         scale, batch, per_req, stream=stream.cuda_stream)
            else:
                k.decode_split(q, table, lens, to_slot, c, pool_lat, pool_pe,
                               part_out, part_lse, out, scale, batch, per_req,
                               splits, stream=stream.cuda_stream)
        kvarn_us = median_us(kvarn_call)
        limit_us = num_blocks * layout.record_bytes / (copy_gbs * 1e3)
        flops = 2 * heads * batch * context * (2 * R + E)
        compute_us = flops / (tflops * 1e6)

        # torch: the unquantized latent and rope keys in bf16.
        kv = cycling(lambda: torch.randn(batch, context, R + E, device=dev,
                                         dtype=torch.bfloat16),
                     batch * context * (R + E) * 2, most=4)
        qb = q.bfloat16()

        def torch_call():
            x = kv[turn[0] % len(kv)]
            turn[0] += 1
            s = torch.matmul(qb, x.transpose(1, 2)) * scale
            return torch.matmul(torch.softmax(s.float(), -1).bfloat16(),
                                x[:, :, :R])
        torch_us = median_us(torch_call)
        del kv

        ref_us = None
        if peer is not None:
            nspl, hgroup = 16, 16
            qr = q.bfloat16().contiguous()
            o = torch.empty(batch, heads, R, dtype=torch.float32, device=dev)
            lse = torch.empty(batch, heads, dtype=torch.float32, device=dev)
            po = torch.empty(batch, heads, nspl, R, dtype=torch.float32, device=dev)
            pl = torch.empty(batch, heads, nspl, dtype=torch.float32, device=dev)
            nb, sc, zp, sr, rp, rec, _ = peer.kvarn_mla_tile_layout(R, E, G, 4)

            def ref_call():
                flat = caches[turn[0] % len(caches)].reshape(-1)
                turn[0] += 1
                peer._kvarn_mla_grouped_stage1[(batch, -(-heads // hgroup), nspl)](
                    qr, flat, pool_lat, pool_pe, table, lens, to_slot, po, pl,
                    scale, qr.stride(0), qr.stride(1), table.stride(0),
                    po.stride(0), po.stride(1), po.stride(2), pl.stride(0),
                    pl.stride(1), pool_lat.stride(0), pool_lat.stride(1),
                    pool_pe.stride(0), pool_pe.stride(1), H=heads,
                    HGROUP=hgroup, R=R, ROPE=E, G=G, NB=nb, SC=sc, ZP=zp,
                    SR=sr, RP=rp, REC=rec, BLOCK_N=32, NUM_SPLITS=nspl,
                    NUM_BLOCKS_LOOKUP=num_blocks, num_warps=8, num_stages=2)
                peer._kvarn_mla_splitk_stage2[(batch, heads)](
                    po, pl, o, lse, po.stride(0), po.stride(1), po.stride(2),
                    pl.stride(0), pl.stride(1), o.stride(0), o.stride(1),
                    lse.stride(0), R=R, NUM_SPLITS=nspl)
            ref_us = median_us(ref_call)
        pct = 100 * limit_us / kvarn_us
        bound_us = max(limit_us, compute_us)
        ref_text = f"{ref_us:8.1f}" if ref_us else f"{'-':>8}"
        ratio = f"{ref_us / kvarn_us:9.2f}" if ref_us else f"{'-':>9}"
        print(f"{what:<34} {kvarn_us:9.1f} {pct:6.1f} {bound_us:8.1f} "
              f"{100 * bound_us / kvarn_us:6.1f} {splits:6d} "
              f"{torch_us:9.1f} {ref_text} {torch_us / kvarn_us:11.2f} {ratio}")
        rows.append({"what": what, "kvarn_us": kvarn_us, "splits": splits,
                     "percent_of_copy": pct, "record_bytes": num_blocks *
                     layout.record_bytes, "memory_limit_us": limit_us,
                     "compute_limit_us": compute_us,
                     "torch_bf16_us": torch_us, "reference_us": ref_us})
        del caches
        torch.cuda.empty_cache()
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": torch.cuda.get_device_name(),
                       "copy_gb_per_s": copy_gbs, "fp16_matmul_tflops": tflops,
                       "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
