#!/usr/bin/env python3
"""fp16 attention baseline for kvarn-bench's decode points.

PyTorch's scaled_dot_product_attention (flash backend where it applies) on
contiguous fp16 K/V of the same shapes: one query token per request, Hq
query heads over Hk KV heads. CUDA events, 3 warm-up calls, the median of
20. Prints a table and, with --json FILE, writes the figures. A benchmark:
it asserts nothing. Needs torch with CUDA (the GPU machine has it).
"""
import argparse
import json
import sys

POINTS = [  # (Hq, Hk, D, batch, context): kvarn-bench's decode rows (issue
    # 14's table) but its two other presets, whose fp16 shape is 8 x 32K's,
    # and its mixed-length row
    (32, 8, 128, 4, 3000), (32, 8, 128, 1, 32768), (32, 8, 128, 1, 131072),
    (32, 8, 128, 8, 32768), (32, 8, 128, 36, 32768), (32, 8, 128, 32, 8192),
    (32, 8, 128, 64, 4096), (32, 8, 128, 128, 2048), (32, 8, 128, 256, 4096),
    (64, 8, 128, 8, 32768), (32, 32, 128, 8, 32768), (32, 8, 64, 8, 32768),
    (32, 8, 256, 8, 32768),
    # the uniform batch beside kvarn-bench's mixed-length row (the same
    # 64512 tokens; SDPA has no ragged batch to time the mixed one with)
    (32, 8, 128, 32, 2016),
]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        print("sdpa_baseline: no torch here: skipped")
        return 77
    if not torch.cuda.is_available():
        print("sdpa_baseline: no CUDA GPU: skipped")
        return 77
    rows = []
    print(f"fp16 SDPA on {torch.cuda.get_device_name()} (torch {torch.__version__})")
    print(f"{'what':<40} {'median us':>12} {'GB/s':>10}")
    for hq, hk, d, batch, ctx in POINTS:
        q = torch.randn(batch, hq, 1, d, device="cuda", dtype=torch.float16)
        k = torch.randn(batch, hk, ctx, d, device="cuda", dtype=torch.float16)
        v = torch.randn_like(k)

        def call():
            return F.scaled_dot_product_attention(q, k, v, enable_gqa=hq != hk)

        for _ in range(3):
            call()
        torch.cuda.synchronize()
        times = []
        for _ in range(20):
            start = torch.cuda.Event(enable_timing=True)
            stop = torch.cuda.Event(enable_timing=True)
            start.record()
            call()
            stop.record()
            stop.synchronize()
            times.append(start.elapsed_time(stop) * 1000.0)
        times.sort()
        us = times[len(times) // 2]
        gbs = 2.0 * k.numel() * 2 / us / 1e3
        what = f"sdpa fp16 {hq}/{hk} D={d} {batch} x {ctx}"
        print(f"{what:<40} {us:12.1f} {gbs:10.1f}")
        rows.append({"what": what, "median_us": us, "gb_per_s": gbs})
        del q, k, v
        torch.cuda.empty_cache()
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": torch.cuda.get_device_name(),
                       "torch": torch.__version__, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
