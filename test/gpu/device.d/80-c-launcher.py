"""kvarn-jit --emit c-launcher on the GPU (issue 16, part 4): the generated
C launchers of flush and decode, compiled with the system C compiler into
one shared library, run against kvarn's own launches (libkvarn through the
Python package) on the same buffers: the records flush writes byte for
byte, decode's output element for element. Random data with a printed seed
(KVARN_TEST_SEED replays it).

  python3 80-c-launcher.py LAUNCHER_LIB"""

import ctypes
import os
import random
import sys

import torch

import kvarn

PRESET, D, GQA, HK, G = "kvarn_k4v2_g128", 128, 4, 2, 128


def main():
    lib = ctypes.CDLL(sys.argv[1])
    seed = int(os.environ.get("KVARN_TEST_SEED") or random.getrandbits(32))
    print("c-launcher: seed %d (KVARN_TEST_SEED=%d replays it)" % (seed, seed))
    gen = torch.Generator().manual_seed(seed)
    dev = torch.device("cuda", 0)
    torch.cuda.set_device(dev)
    stream = torch.cuda.current_stream(dev)
    ctx = kvarn.Context(0, stream)
    kern = kvarn.Kernels(ctx, PRESET, D, GQA)
    kern.load()
    record = kvarn.record_layout(PRESET, D).record_bytes

    # Two requests of 300 and 200 tokens: blocks 0-2 and 3-4; the full ones
    # (0, 1, 3) become records, the tails stay in the pool.
    lens, table = [300, 200], [[0, 1, 2], [3, 4, 0]]
    num_blocks, slots = 5, 5
    pool_k = torch.randn(slots, G, HK, D, generator=gen).half().to(dev)
    pool_v = torch.randn(slots, G, HK, D, generator=gen).half().to(dev)
    i32 = lambda xs: torch.tensor(xs, dtype=torch.int32, device=dev)
    tile_blocks, tile_slots = [0, 1, 3], [0, 1, 3]
    d_slots, d_blocks = i32(tile_slots), i32(tile_blocks)
    caches = []
    for launch in ("kvarn", "c"):
        cache = torch.zeros(num_blocks, HK, record, dtype=torch.uint8,
                            device=dev)
        if launch == "kvarn":
            kern.flush(pool_k, pool_v, d_slots, d_blocks, cache,
                       len(tile_blocks), HK, stream=stream.cuda_stream)
        else:
            status = lib.flush(
                ctypes.c_void_p(stream.cuda_stream),
                *[ctypes.c_uint64(t.data_ptr()) for t in (
                    pool_k, pool_v, d_slots, d_blocks, cache)],
                ctypes.c_int32(len(tile_blocks)), ctypes.c_int32(HK))
            assert status == 0, "the C launcher's flush returned %d" % status
        torch.cuda.synchronize(dev)
        caches.append(cache)
    assert torch.equal(caches[0], caches[1]), "flush: the records differ"
    print("c-launcher: flush: %d records byte-identical to kvarn's launch"
          % (len(tile_blocks) * HK))

    b2s = i32([-1, -1, 2, -1, 4])
    q = torch.randn(len(lens), HK * GQA, D, generator=gen).half().to(dev)
    scale = D ** -0.5
    d_table, d_lens = i32(table), i32(lens)
    outs = []
    for launch in ("kvarn", "c"):
        out = torch.full_like(q, float("nan"))
        args = (q, d_table, d_lens, b2s, caches[0], pool_k, pool_v, out)
        if launch == "kvarn":
            kern.decode(*args, scale, len(lens), 3, HK,
                        stream=stream.cuda_stream)
        else:
            status = lib.decode(
                ctypes.c_void_p(stream.cuda_stream),
                *[ctypes.c_uint64(t.data_ptr()) for t in args],
                ctypes.c_float(scale), ctypes.c_int32(0), ctypes.c_int32(len(lens)),
                ctypes.c_int32(3), ctypes.c_int32(HK))
            assert status == 0, "the C launcher's decode returned %d" % status
        torch.cuda.synchronize(dev)
        outs.append(out)
    assert not torch.isnan(outs[1]).any(), "decode: rows left unwritten"
    diff = (outs[0].float() - outs[1].float()).abs().max().item()
    assert torch.equal(outs[0], outs[1]), "decode: max difference %g" % diff
    print("c-launcher: decode: output identical to kvarn's launch")
    # An empty grid launches nothing; a negative extent is refused.
    assert lib.decode(ctypes.c_void_p(stream.cuda_stream),
                      *[ctypes.c_uint64(0)] * 8, ctypes.c_float(scale),
                      ctypes.c_int32(0), ctypes.c_int32(0), ctypes.c_int32(3),
                      ctypes.c_int32(HK)) == 0
    assert lib.decode(ctypes.c_void_p(stream.cuda_stream),
                      *[ctypes.c_uint64(0)] * 8, ctypes.c_float(scale),
                      ctypes.c_int32(0), ctypes.c_int32(-1), ctypes.c_int32(3),
                      ctypes.c_int32(HK)) == 1  # CUDA_ERROR_INVALID_VALUE
    print("c-launcher: empty and negative grids handled")
    kern.close()
    ctx.close()


if __name__ == "__main__":
    main()
