"""Loads a kvarn artifact group through Triton's own CompiledKernel and
launches it on PyTorch tensors; compares with kvarn's runtime result.

The source descriptor is the minimum Triton's CUDA launcher reads: the
signature (one type per parameter, without the two scratch pointers, which
the launcher appends itself), no constants, and the argument names. Used by
70-triton-compat.sh; exits 0 when both launches wrote the same bytes.

Should this Triton read a metadata field kvarn does not write, the script
adds it (with a neutral value) to a copy of the group, retries, and fails
naming every such field, so one run on the GPU machine says what to add to
runtime/Cache/DiskCache.cpp (buildMetadata).
"""
import argparse
import glob
import json
import os
import re
import shutil
import sys
import tempfile
import traceback
import types

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
    sys.exit("FAIL: expected one artifact group for %s in %s, found %d" %
             (args.kernel, args.cache, len(groups)))
group = json.load(open(groups[0]))["child_paths"]
metadata = json.load(open(group[args.kernel + ".json"]))
print("triton %s, torch %s, %s; artifact group %s" %
      (triton.__version__, torch.__version__, torch.cuda.get_device_name(),
       os.path.dirname(groups[0])))
print("metadata: name=%s num_warps=%d shared=%d target=%s signature=%s" %
      (metadata["name"], metadata["num_warps"], metadata["shared"],
       metadata["target"], metadata["kvarn"]["signature"]))

# append(k, v, slot_mapping, block_to_slot, pool_k, pool_v, num_tokens,
#        num_kv_heads): docs/dsl.md.
arg_names = ["k", "v", "slot_mapping", "block_to_slot", "pool_k", "pool_v",
             "num_tokens", "num_kv_heads"]
types_ = metadata["kvarn"]["signature"]
if types_ != ["*i8"] * 6 + ["i32", "i32"]:
    sys.exit("FAIL: unexpected signature %s" % types_)
src = types.SimpleNamespace(
    signature=dict(zip(arg_names, types_)), constants={}, attrs={},
    fn=types.SimpleNamespace(arg_names=arg_names, constexprs=[],
                             launch_metadata=None, __name__=args.kernel))

case = json.load(open(os.path.join(args.case, "case.json")))


def tensor(name):
    t = case["tensors"][name]
    raw = bytearray(open(os.path.join(args.case, t["file"]), "rb").read())
    dtype = {"float16": torch.float16, "uint8": torch.uint8}[t["dtype"]]
    return torch.frombuffer(raw, dtype=dtype).reshape(t["shape"]).cuda()


k_raw, v_raw = tensor("k_raw"), tensor("v_raw")  # [tiles, G, D]
tiles, group_size, d = k_raw.shape
tokens = tiles * group_size


def launch(metadata_group):
    """The same launch as `kvarn-jit run append`: one KV head, token i to
    slot i, block b to pool slot b, a poisoned pool."""
    kernel = CompiledKernel(src, metadata_group, metadata["hash"])
    slot_mapping = torch.arange(tokens, dtype=torch.int32, device="cuda")
    block_to_slot = torch.arange(tiles, dtype=torch.int32, device="cuda")
    pool_k = torch.full((tiles * group_size * d,), 0x7E01, dtype=torch.int16,
                        device="cuda").view(torch.float16)
    pool_v = pool_k.clone()
    # A CTA runs `programs_per_cta` tokens (docs/cache.md).
    per_cta = metadata["kvarn"].get("programs_per_cta", 1)
    kernel[(-(-tokens // per_cta), 1, 1)](k_raw, v_raw, slot_mapping,
                                          block_to_slot, pool_k, pool_v,
                                          tokens, 1)
    torch.cuda.synchronize()
    return torch.cat([pool_k, pool_v])


# Fields this Triton reads that the metadata lacks: added to a copy, noted.
missing = []
scratch = tempfile.mkdtemp()
metadata_group = dict(group)
patched = dict(metadata)
result = None
for attempt in range(20):
    try:
        result = launch(metadata_group)
        break
    except AttributeError as e:
        m = re.search(r"'KernelMetadata' object has no attribute '(\w+)'", str(e))
        n = re.search(r"'(?:types\.)?SimpleNamespace' object has no attribute '(\w+)'",
                      str(e))
        if m:
            missing.append("metadata." + m.group(1))
            patched[m.group(1)] = None
        elif n:
            missing.append("source." + n.group(1))
            setattr(src, n.group(1), None)
        else:
            traceback.print_exc()
            sys.exit("FAIL: Triton could not load or launch the group: %s" % e)
        copy = os.path.join(scratch, args.kernel + ".json")
        json.dump(patched, open(copy, "w"))
        metadata_group = dict(group)
        metadata_group[args.kernel + ".json"] = copy
    except Exception as e:
        traceback.print_exc()
        sys.exit("FAIL: Triton could not load or launch the group: %s: %s" %
                 (type(e).__name__, e))
shutil.rmtree(scratch)
if missing:
    print("Triton %s also reads: %s" % (triton.__version__, ", ".join(missing)))

kvarn_bytes = bytearray(open(args.expected, "rb").read())
kvarn_result = torch.frombuffer(kvarn_bytes, dtype=torch.float16).cuda()
rot = torch.cat([tensor("k_rot").flatten(), tensor("v_rot").flatten()]).float()
differ = int((result.float() != rot).sum().item())
print("launched through Triton's CompiledKernel: %d tokens; %d of %d values "
      "differ from the case's k_rot/v_rot (max |diff| %.3g)" %
      (tokens, differ, result.numel(),
       (result.float() - rot).abs().max().item()))
same = kvarn_result.numel() == result.numel() and torch.equal(
    kvarn_result.view(torch.int16), result.view(torch.int16))
if not same:
    sys.exit("FAIL: Triton's launch and kvarn's runtime disagree (%d and %d "
             "values)" % (result.numel(), kvarn_result.numel()))
if missing:
    sys.exit("FAIL: the launch worked only after adding %s to the metadata" %
             ", ".join(missing))
print("PASS: Triton %s's CompiledKernel and kvarn's runtime wrote the same %d "
      "bytes" % (triton.__version__, len(kvarn_bytes)))
