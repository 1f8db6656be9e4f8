"""Loads a kvarn artifact group through Triton's own CompiledKernel and
launches it on PyTorch tensors; compares with kvarn's runtime result.

The source descriptor is the minimum Triton's CUDA launcher reads: the
signature (one type per parameter, without the two scratch pointers, which
the launcher appends itself), no constants, and the argument names. Used by
70-triton-compat.sh; exits 0 on agreement, 1 otherwise.
"""
import argparse
import glob
import json
import os
import sys
import types

import numpy as np
import torch
import triton
from triton.compiler import CompiledKernel

parser = argparse.ArgumentParser()
parser.add_argument("--cache", required=True)
parser.add_argument("--kernel", default="append")
parser.add_argument("--case", required=True)
parser.add_argument("--expected", required=True)
args = parser.parse_args()

groups = glob.glob(os.path.join(args.cache, "*", "__grp__%s.json" % args.kernel))
if len(groups) != 1:
    sys.exit("expected one artifact group for %s in %s, found %d" %
             (args.kernel, args.cache, len(groups)))
group = json.load(open(groups[0]))
metadata_group = group["child_paths"]
metadata = json.load(open(metadata_group[args.kernel + ".json"]))
print("triton %s, torch %s; artifact group %s" %
      (triton.__version__, torch.__version__, os.path.dirname(groups[0])))
print("metadata: name=%s num_warps=%d shared=%d target=%s signature=%s" %
      (metadata["name"], metadata["num_warps"], metadata["shared"],
       metadata["target"], metadata["kvarn"]["signature"]))

# append(k, v, slot_mapping, block_to_slot, pool_k, pool_v, num_tokens,
#        num_kv_heads): docs/dsl.md.
arg_names = ["k", "v", "slot_mapping", "block_to_slot", "pool_k", "pool_v",
             "num_tokens", "num_kv_heads"]
signature = dict(zip(arg_names, metadata["kvarn"]["signature"]))
expected_signature = ["*i8"] * 6 + ["i32", "i32"]
if list(signature.values()) != expected_signature:
    sys.exit("unexpected signature %s" % list(signature.values()))
src = types.SimpleNamespace(
    signature=signature, constants={}, attrs={},
    fn=types.SimpleNamespace(arg_names=arg_names, constexprs=[],
                             launch_metadata=None, __name__=args.kernel))
kernel = CompiledKernel(src, metadata_group, metadata["hash"])

case = json.load(open(os.path.join(args.case, "case.json")))


def tensor(name):
    t = case["tensors"][name]
    data = np.fromfile(os.path.join(args.case, t["file"]), dtype=t["dtype"])
    return torch.from_numpy(data.reshape(t["shape"])).cuda()


k_raw, v_raw = tensor("k_raw"), tensor("v_raw")  # [tiles, G, D]
tiles, group_size, d = k_raw.shape
tokens = tiles * group_size
# The same launch as `kvarn-jit run append`: one KV head, token i to slot i,
# block b to pool slot b, a poisoned pool.
slot_mapping = torch.arange(tokens, dtype=torch.int32, device="cuda")
block_to_slot = torch.arange(tiles, dtype=torch.int32, device="cuda")
poison = torch.full((tiles * group_size * d,), 0x7E01, dtype=torch.int32)
pool_k = poison.to(torch.int16).view(torch.float16).cuda()
pool_v = pool_k.clone()
kernel[(tokens, 1, 1)](k_raw, v_raw, slot_mapping, block_to_slot, pool_k,
                       pool_v, tokens, 1)
torch.cuda.synchronize()

triton_bytes = torch.cat([pool_k, pool_v]).cpu().numpy().tobytes()
kvarn_bytes = open(args.expected, "rb").read()
rot = torch.cat([tensor("k_rot").flatten(), tensor("v_rot").flatten()])
ours = torch.cat([pool_k, pool_v]).float()
differ = int((ours != rot.float()).sum().item())
print("launched through Triton's CompiledKernel: %d tokens; %d of %d values "
      "differ from the case's k_rot/v_rot (max |diff| %.3g)" %
      (tokens, differ, ours.numel(), (ours - rot.float()).abs().max().item()))
if triton_bytes != kvarn_bytes:
    mismatched = sum(a != b for a, b in zip(triton_bytes, kvarn_bytes))
    sys.exit("FAIL: Triton's launch and kvarn's runtime disagree (%d of %d "
             "bytes, sizes %d and %d)" % (mismatched, len(kvarn_bytes),
                                          len(triton_bytes), len(kvarn_bytes)))
print("PASS: Triton %s's CompiledKernel and kvarn's runtime wrote the same %d "
      "bytes" % (triton.__version__, len(kvarn_bytes)))
