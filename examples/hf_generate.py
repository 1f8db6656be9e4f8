#!/usr/bin/env python3
"""Greedy generation with a Hugging Face transformers model whose KV cache
lives in kvarn's managed pool (4-bit keys, 2-bit values per 128-token
block). A small random-weight Llama by default, so it runs without
downloads; pass --model DIR to load a local checkpoint instead.

    KVARN_LIBRARY=/path/to/libkvarn.so.0 PYTHONPATH=python \\
        python3 examples/hf_generate.py [--model DIR] [--new-tokens 64]

It prints the tokens generated with transformers' DynamicCache and with
kvarn's cache, how many agree, and the pool's state. See docs/pytorch.md."""

import argparse

import torch
from transformers import AutoModelForCausalLM, DynamicCache, LlamaConfig, LlamaForCausalLM

import kvarn.hf  # registers attn_implementation "kvarn"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", help="a local checkpoint directory")
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--prompt-len", type=int, default=300)
    a = p.parse_args()
    dev = torch.device("cuda", 0)
    torch.manual_seed(0)
    if a.model:
        model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.bfloat16)
    else:
        cfg = LlamaConfig(vocab_size=1024, hidden_size=512, intermediate_size=1024,
                          num_hidden_layers=4, num_attention_heads=8,
                          num_key_value_heads=2, head_dim=128)
        model = LlamaForCausalLM(cfg).to(torch.float16)
    model = model.to(dev).eval()
    ids = torch.randint(3, model.config.vocab_size, (2, a.prompt_len), device=dev)
    mask = torch.ones_like(ids)
    mask[1, :100] = 0  # the second prompt is 100 tokens shorter: left padding
    ids[1, :100] = 0
    kw = dict(attention_mask=mask, max_new_tokens=a.new_tokens, do_sample=False)

    model.set_attn_implementation("sdpa")
    ref = model.generate(ids, past_key_values=DynamicCache(config=model.config), **kw)

    model.set_attn_implementation("kvarn")
    cache = kvarn.hf.KvarnCache(model.config, max_batch_size=2,
                                max_cache_len=a.prompt_len + a.new_tokens)
    out = model.generate(ids, past_key_values=cache, **kw)
    new_ref, new = ref[:, ids.shape[1]:], out[:, ids.shape[1]:]
    print("DynamicCache:", new_ref.tolist())
    print("kvarn:       ", new.tolist())
    print("equal tokens: %.3f" % (new == new_ref).float().mean().item())
    for r in range(2):
        print("request %d:" % r, cache.kv.request_info(r))
    print("pool:", cache.kv.stats())
    cache.close()


if __name__ == "__main__":
    main()
