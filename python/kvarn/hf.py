"""Hugging Face transformers with kvarn's KV cache (docs/pytorch.md).

    import kvarn.hf
    model.set_attn_implementation("kvarn")        # registered on import
    cache = kvarn.hf.KvarnCache(model.config, max_batch_size=4,
                                max_cache_len=4096)
    out = model.generate(input_ids, attention_mask=mask,
                         past_key_values=cache, max_new_tokens=256)

KvarnCache is a transformers Cache whose K/V live in kvarn's managed pool
(kvarn.torch.PagedKVCache): batch row b is pool request b. Each forward is
one pool step: the first layer's attention begins it, every layer writes
its new K/V and attends, the last layer commits it and flushes the full
blocks (4-bit keys / 2-bit values; each request's first block, the sink,
and its partial last block stay fp16).

- Prefill (an empty cache): only the real tokens of each row are written
  (left padding, read from the attention mask, is dropped), and attention
  over the prompt is transformers' own SDPA on the prompt's exact K/V.
- Decode (one new token per row): kvarn's decode kernels over the pool.
- Several new tokens on a non-empty cache: kvarn's verify kernel (causal).

The "kvarn" attention function falls back to SDPA for any cache that is not
a KvarnCache, and the "kvarn" mask is SDPA's. Full attention only: a model
with sliding-window layers is rejected. Not for torch.compile, beam search,
crop or reorder (they raise).
"""

import torch
from transformers.cache_utils import Cache, CacheLayerMixin
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
from transformers.modeling_utils import AttentionInterface

from ._api import KvarnArgumentError, record_layout
from .torch import PagedKVCache

ATTN_IMPLEMENTATION = "kvarn"


def _cdiv(a, b):
    return -(-a // b)


class KvarnLayer(CacheLayerMixin):
    """One layer of a KvarnCache: its K/V are in the parent's pool; this
    object only counts the positions transformers sees (padding included)."""

    is_compileable = False
    is_sliding = False
    is_croppable = False

    def __init__(self, parent, layer_idx):
        super().__init__()
        self.parent = parent
        self.layer_idx = layer_idx
        self.length = 0

    def lazy_initialization(self, key_states, value_states):
        self.dtype, self.device = key_states.dtype, key_states.device
        self.is_initialized = True

    def update(self, key_states, value_states, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        return self.parent._update(self.layer_idx, key_states, value_states)

    def get_mask_sizes(self, query_length):
        return self.length + query_length, 0

    def get_seq_length(self):
        return self.length

    def get_max_length(self):
        return self.parent.context_capacity

    def reset(self):
        self.length = 0

    def _unsupported(self, what):
        raise NotImplementedError("KvarnCache does not support %s" % what)

    def reorder_cache(self, beam_idx):
        self._unsupported("reorder_cache (beam search)")

    def crop(self, tokens_to_remove):
        self._unsupported("crop")

    def batch_repeat_interleave(self, repeats):
        self._unsupported("batch_repeat_interleave")

    def batch_select_indices(self, indices):
        self._unsupported("batch_select_indices")

    def offload(self):
        self._unsupported("offloading")

    def prefetch(self):
        pass


class KvarnCache(Cache):
    """A transformers Cache held by kvarn's managed pool.

    config: the model's config (layers, heads, head_dim); max_batch_size,
    max_cache_len: the pool's requests and blocks per request (prompt,
    padding excluded, plus new tokens). pool_slots: fp16 blocks (default:
    every block when flush=False, else per request the sink, the tail, one
    waiting for the flush and the blocks of a prompt of max_prompt_len,
    default max_cache_len). flush=False keeps every block in fp16: attention
    then equals plain fp16 attention (a debugging and accuracy baseline).
    dtype: the model's (fp16 or bf16; bf16 is converted to fp16 at the pool
    boundary, see kvarn.torch.PagedKVCache). The pool is made on the first
    forward's device."""

    def __init__(self, config, max_batch_size, max_cache_len,
                 preset="kvarn_k4v2_g128", flush=True, pool_slots=None,
                 max_prompt_len=None, num_blocks=None):
        cfg = config.get_text_config(decoder=True)
        self.num_layers = cfg.num_hidden_layers
        self.num_q_heads = cfg.num_attention_heads
        self.num_kv_heads = getattr(cfg, "num_key_value_heads", None) \
            or self.num_q_heads
        self.head_dim = getattr(cfg, "head_dim", None) \
            or cfg.hidden_size // cfg.num_attention_heads
        layer_types = getattr(cfg, "layer_types", None) or []
        window = getattr(cfg, "sliding_window", None)
        if any(t != "full_attention" for t in layer_types) and \
                (window is None or window < max_cache_len):
            raise KvarnArgumentError(
                "KvarnCache: the model has non-full-attention layers (%s); "
                "kvarn attends to the whole context"
                % sorted(set(layer_types) - {"full_attention"}))
        if getattr(cfg, "use_sliding_window", False) and window is not None \
                and window < max_cache_len:
            raise KvarnArgumentError(
                "KvarnCache: sliding_window %d < max_cache_len %d"
                % (window, max_cache_len))
        # (not max_batch_size / max_cache_len: Cache has read-only
        # properties of those names)
        self.batch_capacity = max_batch_size
        self.context_capacity = max_cache_len
        self.preset, self.flush_blocks = preset, flush
        self._sizes = (pool_slots, max_prompt_len, num_blocks)
        self.kv = None  # the PagedKVCache, made on the first forward
        self._lengths = [0] * max_batch_size  # real tokens per request
        self._batch = None
        self._step_valid = None
        self._step_kind = None
        super().__init__(layers=[KvarnLayer(self, i)
                                 for i in range(self.num_layers)])

    # -- the pool ------------------------------------------------------------

    def _make_pool(self, device, dtype):
        block = record_layout(self.preset, self.head_dim).group
        per_request = _cdiv(self.context_capacity, block)
        pool_slots, max_prompt, num_blocks = self._sizes
        num_blocks = num_blocks or self.batch_capacity * per_request
        if pool_slots is None:
            if not self.flush_blocks:
                pool_slots = num_blocks
            else:
                prompt = _cdiv(max_prompt or self.context_capacity, block)
                pool_slots = min(num_blocks,
                                 self.batch_capacity * (3 + prompt))
        self.kv = PagedKVCache(self.num_layers, self.num_kv_heads,
                               self.num_q_heads, self.head_dim, num_blocks,
                               pool_slots, self.batch_capacity, per_request,
                               preset=self.preset, device=device, dtype=dtype)

    def close(self):
        if self.kv is not None:
            self.kv.close()
            self.kv = None

    def _update(self, layer, key, value):
        if self.kv is None:
            self._make_pool(key.device, key.dtype)
        self.layers[layer].length += key.shape[-2]
        # The attention function finds the cache through the key it is
        # handed (transformers passes update's result straight to it).
        key._kvarn = (self, layer)
        return key, value

    def reset(self):
        if self.kv is not None:
            for b in range(self._batch or 0):
                self.kv.free(b)
        self._lengths = [0] * self.batch_capacity
        self._batch = None
        for layer in self.layers:
            layer.reset()

    # -- one forward = one pool step -----------------------------------------

    def _begin(self, query, key, attention_mask):
        bsz, q_len = query.shape[0], query.shape[2]
        if self._batch is None:
            if bsz > self.batch_capacity:
                raise KvarnArgumentError(
                    "KvarnCache: batch %d > max_batch_size %d"
                    % (bsz, self.batch_capacity))
            for b in range(bsz):
                self.kv.add_request(b)
            self._batch = bsz
        elif bsz != self._batch:
            raise KvarnArgumentError("KvarnCache: batch changed from %d to %d"
                                     % (self._batch, bsz))
        if all(n == 0 for n in self._lengths[:bsz]):
            # Prefill: row b's real tokens are the keys its last query may
            # see (left padding masked out; the last query is real).
            self._step_kind = "prefill"
            if attention_mask is None:
                valid = torch.ones(bsz, q_len, dtype=torch.bool,
                                   device=key.device)
            else:
                m = attention_mask[:, 0, -1, -q_len:]
                if m.dtype != torch.bool:  # additive float mask
                    m = m > torch.finfo(m.dtype).min / 2
                valid = m.expand(bsz, q_len)
            counts = valid.sum(-1).tolist()
            if min(counts) == 0:
                raise KvarnArgumentError("KvarnCache: a prompt without any "
                                         "unmasked token")
            self._step_valid = None if min(counts) == q_len else valid
        else:
            self._step_kind = "decode" if q_len == 1 else "verify"
            counts = [q_len] * bsz
            self._step_valid = None
        total = [n + c for n, c in zip(self._lengths, counts)]
        if max(total) > self.context_capacity:
            raise KvarnArgumentError("KvarnCache: %d tokens > max_cache_len "
                                     "%d" % (max(total), self.context_capacity))
        self.kv.begin(list(range(bsz)), counts)
        self._step_counts = counts

    def _attend(self, module, layer, query, key, value, attention_mask,
                dropout, scaling, kwargs):
        window = kwargs.get("sliding_window")
        if window is not None and self.context_capacity > window:
            raise KvarnArgumentError("KvarnCache: layer %d has sliding window "
                                     "%d" % (layer, window))
        if layer == 0:
            self._begin(query, key, attention_mask)
        bsz, hq, q_len, d = query.shape
        # Token-major rows [tokens, Hk, D], request after request.
        k_rows = key.transpose(1, 2)
        v_rows = value.transpose(1, 2)
        if self._step_valid is not None:
            k_rows, v_rows = k_rows[self._step_valid], v_rows[self._step_valid]
        else:
            k_rows = k_rows.reshape(-1, *k_rows.shape[2:])
            v_rows = v_rows.reshape(-1, *v_rows.shape[2:])
        self.kv.write_kv(layer, k_rows.contiguous(), v_rows.contiguous())
        if self._step_kind == "prefill":
            out, _ = sdpa_attention_forward(module, query, key, value,
                                            attention_mask, dropout=dropout,
                                            scaling=scaling, **kwargs)
        elif self._step_kind == "decode":
            q = query.reshape(bsz, hq, d)  # [B, Hq, 1, D] -> [B, Hq, D]
            out = self.kv.decode(layer, q.contiguous(),
                                 softmax_scale=scaling).view(bsz, 1, hq, d)
        else:
            q = query.transpose(1, 2).contiguous()  # [B, Q, Hq, D]
            out = self.kv.verify(layer, q, softmax_scale=scaling)
        if layer == self.num_layers - 1:
            self.kv.commit()
            self._lengths = [n + c for n, c in
                             zip(self._lengths, self._step_counts)]
            if self.flush_blocks:
                self.kv.flush()
        return out, None


def kvarn_attention_forward(module, query, key, value, attention_mask,
                            dropout=0.0, scaling=None, **kwargs):
    """transformers' attention interface: query [B, Hq, Q, D], key/value
    as KvarnCache.update returned them; returns ([B, Q, Hq, D], None)."""
    tag = getattr(key, "_kvarn", None)
    if tag is None:
        return sdpa_attention_forward(module, query, key, value,
                                      attention_mask, dropout=dropout,
                                      scaling=scaling, **kwargs)
    cache, layer = tag
    if scaling is None:
        scaling = module.scaling
    return cache._attend(module, layer, query, key, value, attention_mask,
                         dropout, scaling, kwargs)


def register():
    """Registers the "kvarn" attention and mask functions (done on
    import)."""
    AttentionInterface.register(ATTN_IMPLEMENTATION, kvarn_attention_forward)
    AttentionMaskInterface.register(ATTN_IMPLEMENTATION, sdpa_mask)


register()
