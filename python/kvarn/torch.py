"""PyTorch tensors in, PyTorch tensors out: kvarn's kernels and managed pool
with every tensor checked against the kernels' contract (docs/pytorch.md).

    import torch, kvarn.torch as kt
    ks = kt.KernelSet(head_dim=128, gqa=4, dtype=torch.bfloat16)   # cuda:0
    pages = ks.allocate(num_blocks=1024, num_kv_heads=8, pool_slots=64)
    ks.append(k, v, slot_mapping, block_to_slot, pages.pool_k, pages.pool_v)
    out = ks.decode(q, block_table, seq_lens, block_to_slot, pages.cache,
                    pages.pool_k, pages.pool_v)

    cache = kt.PagedKVCache(num_layers=32, num_kv_heads=8, num_q_heads=32,
                            head_dim=128, num_blocks=4096, pool_slots=160,
                            max_requests=64, max_blocks_per_request=256)

Everything runs on the caller's current stream. A tensor of the wrong shape,
dtype, device, layout, or an index out of range raises
kvarn.KvarnArgumentError naming the function and the argument; nothing is
launched then. This module imports torch; `import kvarn` alone does not.
"""

import math

import torch

from . import _api
from ._api import KvarnArgumentError

__all__ = ["KernelSet", "DecodeWorkspace", "Pages", "PagedKVCache",
           "MlaKernelSet", "MlaPages", "activation_dtype_name"]

_ACT = {torch.float16: "f16", torch.bfloat16: "bf16"}


def activation_dtype_name(dtype):
    """"f16" or "bf16" for a torch dtype the kernels take as activations."""
    if dtype not in _ACT:
        raise KvarnArgumentError("dtype must be torch.float16 or "
                                 "torch.bfloat16, not %s" % (dtype,))
    return _ACT[dtype]


def _device(device):
    d = torch.device("cuda", torch.cuda.current_device()) if device is None \
        else torch.device(device)
    if d.type != "cuda":
        raise KvarnArgumentError("kvarn runs on CUDA devices, not %s" % d)
    if d.index is None:
        d = torch.device("cuda", torch.cuda.current_device())
    return d


def _shape_str(shape):
    return "[" + ", ".join(str(s) for s in shape) + "]"


def _tensor(where, name, t, shape, dtype, device, names=None):
    """Checks one tensor argument: a torch.Tensor on `device`, of `dtype` (a
    dtype or a tuple of them), shape `shape` (None entries: any extent),
    row-major contiguous. The kernels take a bare pointer and index it as a
    dense row-major array, so any other layout would be read wrongly."""
    if not isinstance(t, torch.Tensor):
        raise KvarnArgumentError("%s: %s must be a torch.Tensor, not %s"
                                 % (where, name, type(t).__name__))
    if t.device != device:
        raise KvarnArgumentError("%s: %s is on %s, expected %s"
                                 % (where, name, t.device, device))
    dtypes = dtype if isinstance(dtype, tuple) else (dtype,)
    if t.dtype not in dtypes:
        raise KvarnArgumentError("%s: %s has dtype %s, expected %s"
                                 % (where, name, t.dtype,
                                    " or ".join(str(d) for d in dtypes)))
    if t.dim() != len(shape) or any(
            s is not None and s != got for s, got in zip(shape, t.shape)):
        want = _shape_str("*" if s is None else s for s in shape)
        if names:
            want += " (%s)" % ", ".join(names)
        raise KvarnArgumentError("%s: %s has shape %s, expected %s"
                                 % (where, name, _shape_str(t.shape), want))
    if not t.is_contiguous():
        raise KvarnArgumentError("%s: %s is not contiguous (strides %s); "
                                 "pass .contiguous()"
                                 % (where, name, tuple(t.stride())))
    if t.numel() and t.data_ptr() % 16:
        raise KvarnArgumentError("%s: %s is not 16-byte aligned" % (where, name))
    return t


def _capturing():
    return torch.cuda.is_current_stream_capturing()


def _range(where, name, t, lo, hi, what=""):
    """Values of the int tensor t within [lo, hi]. Reads the device (one
    sync), so it is skipped while a CUDA graph is being captured: the
    values of a replay are the caller's to keep in range."""
    if t.numel() == 0 or _capturing():
        return
    mn, mx = (int(x) for x in torch.aminmax(t))
    if mn < lo or mx > hi:
        raise KvarnArgumentError("%s: %s has values in [%d, %d], expected "
                                 "[%d, %d]%s" % (where, name, mn, mx, lo, hi,
                                                 what))


def _int(where, name, v, lo=None, hi=None):
    if isinstance(v, bool) or not isinstance(v, int):
        raise KvarnArgumentError("%s: %s must be an int, not %s"
                                 % (where, name, type(v).__name__))
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise KvarnArgumentError("%s: %s = %d is out of range [%s, %s]"
                                 % (where, name, v, lo, hi))
    return v


def _check_workspace(where, ws, kind, a_kind, maker, shape_names, shape,
                     fits):
    """`ws` must be a `kind` (`a_kind`: "a DecodeWorkspace"; from `maker`)
    made for `shape` (named by `shape_names`) whose capacity covers the call:
    `fits` lists (what, the workspace's attribute holding its capacity, the
    call's need, whether the two must be equal); the attributes are read
    only once `ws` is known to be a `kind`."""
    if not isinstance(ws, kind):
        raise KvarnArgumentError(
            "%s: workspace must be %s (from %s), not %s"
            % (where, a_kind, maker, type(ws).__name__))
    if ws.shape != shape:
        raise KvarnArgumentError(
            "%s: workspace is for %s %s, this %s's are %s"
            % (where, shape_names, ws.shape, maker.split(".")[0], shape))
    fits = [(what, getattr(ws, attr), need, exact)
            for what, attr, need, exact in fits]
    if any(need != have if exact else need > have
           for _, have, need, exact in fits):
        raise KvarnArgumentError(
            "%s: workspace is for up to %s; got %s"
            % (where, ", ".join("%d %s" % (have, what)
                                for what, have, _, _ in fits),
               ", ".join("%d" % need for _, _, need, _ in fits)))


def _check_decode_indices(where, seq_lens, block_table, block_to_slot,
                          block_size, num_blocks, pool_slots):
    """seq_lens within the block table's width, the blocks they use within
    the cache, block_to_slot within the pool (skipped during capture)."""
    if _capturing():
        return
    max_blocks = block_table.shape[1]
    _range(where, "seq_lens", seq_lens, 0, max_blocks * block_size,
           " (max_blocks * block_size at most)")
    used = (torch.arange(max_blocks, device=seq_lens.device)[None, :]
            * block_size < seq_lens[:, None].long())
    _range(where, "block_table (blocks within seq_lens)", block_table[used], 0,
           num_blocks - 1)
    _range(where, "block_to_slot", block_to_slot, -1, pool_slots - 1)


class Pages:
    """One layer's paged cache as torch tensors: cache uint8 [num_blocks,
    Hk, record_bytes] (the records), pool_k / pool_v fp16 [pool_slots,
    block_size, Hk, D] (rotated rows of blocks not yet flushed), and
    block_to_slot int32 [num_blocks] (-1: read the record)."""

    def __init__(self, cache, pool_k, pool_v, block_to_slot):
        self.cache, self.pool_k, self.pool_v = cache, pool_k, pool_v
        self.block_to_slot = block_to_slot


class DecodeWorkspace:
    """Persistent state of decode for one deployment shape: the split count
    kvarn_decode_split_count chose for up to `batch_capacity` requests of up
    to `max_blocks` blocks and `num_kv_heads` heads, and decode_split's f32
    scratch sized for it. Fixed for the deployment, so a decode that uses it
    launches the same kernels on the same buffers every step: capturable in
    a CUDA graph."""

    def __init__(self, kernel_set, batch_capacity, max_blocks, num_kv_heads):
        where = "DecodeWorkspace"
        self.batch_capacity = _int(where, "batch_capacity", batch_capacity, 1)
        self.max_blocks = _int(where, "max_blocks", max_blocks, 1)
        self.num_kv_heads = _int(where, "num_kv_heads", num_kv_heads, 1)
        ks = kernel_set
        # The scratch is sized for these: decode checks them.
        self.shape = (ks.gqa, ks.head_dim, ks.device)
        self.num_splits = ks.kernels.decode_split_count(
            batch_capacity, max_blocks, num_kv_heads)
        self.part_out = self.part_lse = None
        if self.num_splits > 1:
            po, pl = ks.split_scratch_bytes(batch_capacity, num_kv_heads)
            self.part_out = torch.empty(po // 4, dtype=torch.float32,
                                        device=ks.device)
            self.part_lse = torch.empty(pl // 4, dtype=torch.float32,
                                        device=ks.device)


class KernelSet:
    """The kernels of one (preset, head_dim, GQA ratio, activation dtype) on
    one GPU, taking torch tensors. Activations (q, append's k/v, outputs)
    are `dtype` (torch.float16 or torch.bfloat16); the pool is fp16, the
    records bytes, whatever it is."""

    def __init__(self, head_dim=128, gqa=1, dtype=torch.float16,
                 preset="kvarn_k4v2_g128", device=None, load=True):
        self.device = _device(device)
        self.dtype = dtype
        self.head_dim, self.gqa, self.preset = head_dim, gqa, preset
        self.context = _api.Context(self.device.index,
                                    torch.cuda.current_stream(self.device))
        self.kernels = _api.Kernels(self.context, preset, head_dim, gqa,
                                    activation_dtype_name(dtype))
        if load:  # compile now: no launch compiles, graph capture works
            self.kernels.load()
        layout = _api.record_layout(preset, head_dim)
        self.block_size = layout.group
        self.record_bytes = layout.record_bytes
        self._workspaces = {}

    def close(self):
        self.kernels.close()
        self.context.close()

    def _stream(self):
        return torch.cuda.current_stream(self.device).cuda_stream

    def split_scratch_bytes(self, batch, num_kv_heads):
        import ctypes
        po, pl = ctypes.c_int64(0), ctypes.c_int64(0)
        _api._call("kvarn_decode_split_scratch_bytes", batch, num_kv_heads,
                   self.gqa, self.head_dim, ctypes.byref(po), ctypes.byref(pl))
        return po.value, pl.value

    def allocate(self, num_blocks, num_kv_heads, pool_slots):
        """Zeroed buffers of one layer's paged cache; block_to_slot all -1."""
        s = _api.cache_shape(self.preset, self.head_dim, num_kv_heads,
                             num_blocks, pool_slots)
        dev = self.device
        pool = (pool_slots, self.block_size, num_kv_heads, self.head_dim)
        return Pages(
            torch.zeros(num_blocks, num_kv_heads, s.record_bytes,
                        dtype=torch.uint8, device=dev),
            torch.zeros(pool, dtype=torch.float16, device=dev),
            torch.zeros(pool, dtype=torch.float16, device=dev),
            torch.full((num_blocks,), -1, dtype=torch.int32, device=dev))

    def workspace(self, batch_capacity, max_blocks, num_kv_heads):
        """A DecodeWorkspace for this shape (made once, then reused)."""
        key = (batch_capacity, max_blocks, num_kv_heads)
        if key not in self._workspaces:
            self._workspaces[key] = DecodeWorkspace(self, *key)
        return self._workspaces[key]

    # -- shared checks -------------------------------------------------------

    def _pool(self, where, pool_k, pool_v, hk=None):
        g, d = self.block_size, self.head_dim
        names = ("pool_slots", "block_size", "num_kv_heads", "head_dim")
        _tensor(where, "pool_k", pool_k, (None, g, hk, d), torch.float16,
                self.device, names)
        _tensor(where, "pool_v", pool_v, tuple(pool_k.shape), torch.float16,
                self.device, names)
        return pool_k.shape[0], pool_k.shape[2]

    def _cache(self, where, cache, hk):
        _tensor(where, "cache", cache, (None, hk, self.record_bytes),
                torch.uint8, self.device,
                ("num_blocks", "num_kv_heads", "record_bytes"))
        return cache.shape[0]

    def _i32(self, where, name, t, shape, names=None):
        return _tensor(where, name, t, shape, torch.int32, self.device, names)

    # -- kernels -------------------------------------------------------------

    def append(self, k, v, slot_mapping, block_to_slot, pool_k, pool_v,
               check_indices=True):
        """Writes the rotated rows of k, v [num_tokens, Hk, D] (activation
        dtype) to the pool: token t to block slot_mapping[t] // block_size
        (int32; < 0 skips the token), row slot_mapping[t] % block_size of its
        pool slot block_to_slot[block] (int32 [num_blocks]; -1: not in the
        pool, skipped)."""
        where = "kvarn.torch.append"
        slots, hk = self._pool(where, pool_k, pool_v)
        names = ("num_tokens", "num_kv_heads", "head_dim")
        _tensor(where, "k", k, (None, hk, self.head_dim), self.dtype,
                self.device, names)
        _tensor(where, "v", v, tuple(k.shape), self.dtype, self.device, names)
        n = k.shape[0]
        self._i32(where, "slot_mapping", slot_mapping, (n,))
        self._i32(where, "block_to_slot", block_to_slot, (None,),
                  ("num_blocks",))
        nb = block_to_slot.shape[0]
        if check_indices:
            _range(where, "slot_mapping", slot_mapping, -(1 << 31),
                   nb * self.block_size - 1, " (num_blocks * block_size - 1 "
                   "at most; negative: padding)")
            _range(where, "block_to_slot", block_to_slot, -1, slots - 1)
        if n:
            self.kernels.append(k, v, slot_mapping, block_to_slot, pool_k,
                                pool_v, n, hk, stream=self._stream())

    def flush(self, pool_k, pool_v, tile_slots, tile_blocks, cache,
              check_indices=True):
        """Quantizes pool slot tile_slots[t] into the record of block
        tile_blocks[t] (both int32 [num_tiles]). The caller then sets
        block_to_slot[tile_blocks] = -1 and may reuse the slots."""
        where = "kvarn.torch.flush"
        slots, hk = self._pool(where, pool_k, pool_v)
        nb = self._cache(where, cache, hk)
        self._i32(where, "tile_slots", tile_slots, (None,), ("num_tiles",))
        n = tile_slots.shape[0]
        self._i32(where, "tile_blocks", tile_blocks, (n,))
        if check_indices:
            _range(where, "tile_slots", tile_slots, 0, slots - 1)
            _range(where, "tile_blocks", tile_blocks, 0, nb - 1)
        if n:
            self.kernels.flush(pool_k, pool_v, tile_slots, tile_blocks, cache,
                               n, hk, stream=self._stream())

    def decode(self, q, block_table, seq_lens, block_to_slot, cache, pool_k,
               pool_v, out=None, softmax_scale=None, workspace=None,
               check_indices=True):
        """Attention of q [batch, Hq, D] (activation dtype, un-rotated; Hq =
        Hk * gqa) over request b's first seq_lens[b] tokens, block i of it
        being block_table[b, i] (int32 [batch, max_blocks]): read from the
        pool where block_to_slot says so, else from its record. Returns out
        [batch, Hq, D] (given or new); rows with seq_lens[b] == 0 are left
        as they were (zeros when out is new). softmax_scale: 1/sqrt(D)
        by default.

        decode or decode_split + combine, and the split count, come from
        `workspace` (a DecodeWorkspace; by default one made for this
        batch and width and kept). A graph-captured decode should pass the
        workspace and `out` it captured with; index checks read the device
        and are skipped during capture."""
        where = "kvarn.torch.decode"
        slots, hk = self._pool(where, pool_k, pool_v)
        nb = self._cache(where, cache, hk)
        hq, d = hk * self.gqa, self.head_dim
        names = ("batch", "num_q_heads = num_kv_heads * gqa", "head_dim")
        _tensor(where, "q", q, (None, hq, d), self.dtype, self.device, names)
        batch = q.shape[0]
        self._i32(where, "block_table", block_table, (batch, None),
                  ("batch", "max_blocks"))
        max_blocks = block_table.shape[1]
        self._i32(where, "seq_lens", seq_lens, (batch,))
        self._i32(where, "block_to_slot", block_to_slot, (nb,),
                  ("num_blocks of cache",))
        if out is None:
            out = torch.zeros_like(q)
        else:
            _tensor(where, "out", out, tuple(q.shape), self.dtype,
                    self.device, names)
        if softmax_scale is None:
            softmax_scale = 1.0 / math.sqrt(d)
        if batch == 0:
            return out
        if max_blocks == 0:
            raise KvarnArgumentError("%s: block_table has no columns" % where)
        if check_indices:
            _check_decode_indices(where, seq_lens, block_table, block_to_slot,
                                  self.block_size, nb, slots)
        ws = workspace if workspace is not None else \
            self.workspace(batch, max_blocks, hk)
        _check_workspace(where, ws, DecodeWorkspace, "a DecodeWorkspace",
                         "KernelSet.workspace",
                         "gqa, head_dim, device",
                         (self.gqa, self.head_dim, self.device),
                         [("requests", "batch_capacity", batch, False),
                          ("blocks", "max_blocks", max_blocks, False),
                          ("KV heads", "num_kv_heads", hk, True)])
        s = self._stream()
        if ws.num_splits == 1:
            self.kernels.decode(q, block_table, seq_lens, block_to_slot,
                                cache, pool_k, pool_v, out, softmax_scale,
                                batch, max_blocks, hk, stream=s)
        else:
            self.kernels.decode_split(q, block_table, seq_lens, block_to_slot,
                                      cache, pool_k, pool_v, ws.part_out,
                                      ws.part_lse, out, softmax_scale, batch,
                                      max_blocks, hk, ws.num_splits, stream=s)
        return out


class MlaPages:
    """One MLA layer's paged cache as torch tensors: cache uint8
    [num_blocks, record_bytes], pool_latent fp16 [pool_slots, block_size,
    kv_lora_rank] (rotated latents of blocks not yet flushed), pool_pe fp16
    [pool_slots, block_size, rope_dim], block_to_slot int32 [num_blocks]."""

    def __init__(self, cache, pool_latent, pool_pe, block_to_slot):
        self.cache, self.pool_latent, self.pool_pe = cache, pool_latent, pool_pe
        self.block_to_slot = block_to_slot


class MlaDecodeWorkspace:
    """DecodeWorkspace for an MLA layer: the split count
    kvarn_mla_decode_split_count chose for up to `batch_capacity` requests
    of up to `max_blocks` blocks, and mla_decode_split's f32 scratch sized
    for it, so that a decode that uses it is capturable in a CUDA graph."""

    def __init__(self, kernel_set, batch_capacity, max_blocks):
        where = "MlaDecodeWorkspace"
        self.batch_capacity = _int(where, "batch_capacity", batch_capacity, 1)
        self.max_blocks = _int(where, "max_blocks", max_blocks, 1)
        ks = kernel_set
        # The scratch is sized for these: decode checks them.
        self.shape = (ks.heads, ks.rank, ks.device)
        self.num_splits = ks.kernels.decode_split_count(batch_capacity,
                                                        max_blocks)
        self.part_out = self.part_lse = None
        if self.num_splits > 1:
            po, pl = _api.mla_decode_split_scratch_bytes(
                batch_capacity, ks.heads, ks.rank)
            self.part_out = torch.empty(po // 4, dtype=torch.float32,
                                        device=ks.device)
            self.part_lse = torch.empty(pl // 4, dtype=torch.float32,
                                        device=ks.device)


class MlaKernelSet:
    """The MLA kernels (docs/kvarn.md, "MLA records") of one (kv_lora_rank,
    rope_dim, query heads, activation dtype) on one GPU, taking torch
    tensors: latents and rope keys in, the absorbed query [batch, heads,
    kv_lora_rank + rope_dim] in, attention over the latent [batch, heads,
    kv_lora_rank] out (un-rotated)."""

    def __init__(self, kv_lora_rank=512, rope_dim=64, num_heads=16,
                 dtype=torch.float16, preset="kvarn_mla_k4_g128", device=None,
                 load=True):
        self.device = _device(device)
        self.dtype = dtype
        self.rank, self.rope_dim, self.heads = kv_lora_rank, rope_dim, num_heads
        self.context = _api.Context(self.device.index,
                                    torch.cuda.current_stream(self.device))
        self.kernels = _api.MlaKernels(self.context, kv_lora_rank, rope_dim,
                                       num_heads, preset,
                                       activation_dtype_name(dtype))
        if load:
            self.kernels.load()
        layout = _api.mla_record_layout(preset, kv_lora_rank, rope_dim)
        self.block_size = layout.group
        self.record_bytes = layout.record_bytes
        self._workspaces = {}

    def close(self):
        self.kernels.close()
        self.context.close()

    def _stream(self):
        return torch.cuda.current_stream(self.device).cuda_stream

    def allocate(self, num_blocks, pool_slots):
        """Zeroed buffers of one layer's MLA cache; block_to_slot all -1."""
        dev, g = self.device, self.block_size
        return MlaPages(
            torch.zeros(num_blocks, self.record_bytes, dtype=torch.uint8,
                        device=dev),
            torch.zeros(pool_slots, g, self.rank, dtype=torch.float16,
                        device=dev),
            torch.zeros(pool_slots, g, self.rope_dim, dtype=torch.float16,
                        device=dev),
            torch.full((num_blocks,), -1, dtype=torch.int32, device=dev))

    def _pool(self, where, pool_latent, pool_pe):
        g = self.block_size
        _tensor(where, "pool_latent", pool_latent, (None, g, self.rank),
                torch.float16, self.device,
                ("pool_slots", "block_size", "kv_lora_rank"))
        _tensor(where, "pool_pe", pool_pe,
                (pool_latent.shape[0], g, self.rope_dim), torch.float16,
                self.device, ("pool_slots", "block_size", "rope_dim"))
        return pool_latent.shape[0]

    def _cache(self, where, cache):
        _tensor(where, "cache", cache, (None, self.record_bytes), torch.uint8,
                self.device, ("num_blocks", "record_bytes"))
        return cache.shape[0]

    def _i32(self, where, name, t, shape, names=None):
        return _tensor(where, name, t, shape, torch.int32, self.device, names)

    def append(self, latent, k_pe, slot_mapping, block_to_slot, pool_latent,
               pool_pe, check_indices=True):
        """Writes latent [num_tokens, kv_lora_rank] (rotated on the way) and
        k_pe [num_tokens, rope_dim] (activation dtype) to the pool rows of
        their slots, as KernelSet.append does."""
        where = "kvarn.torch.MlaKernelSet.append"
        slots = self._pool(where, pool_latent, pool_pe)
        _tensor(where, "latent", latent, (None, self.rank), self.dtype,
                self.device, ("num_tokens", "kv_lora_rank"))
        n = latent.shape[0]
        _tensor(where, "k_pe", k_pe, (n, self.rope_dim), self.dtype,
                self.device, ("num_tokens", "rope_dim"))
        self._i32(where, "slot_mapping", slot_mapping, (n,))
        self._i32(where, "block_to_slot", block_to_slot, (None,),
                  ("num_blocks",))
        nb = block_to_slot.shape[0]
        if check_indices:
            _range(where, "slot_mapping", slot_mapping, -(1 << 31),
                   nb * self.block_size - 1, " (num_blocks * block_size - 1 "
                   "at most; negative: padding)")
            _range(where, "block_to_slot", block_to_slot, -1, slots - 1)
        if n:
            self.kernels.append(latent, k_pe, slot_mapping, block_to_slot,
                                pool_latent, pool_pe, n, stream=self._stream())

    def flush(self, pool_latent, pool_pe, tile_slots, tile_blocks, cache,
              check_indices=True):
        """Quantizes pool slot tile_slots[t] into the record of block
        tile_blocks[t]; the caller then sets block_to_slot[tile_blocks] =
        -1."""
        where = "kvarn.torch.MlaKernelSet.flush"
        slots = self._pool(where, pool_latent, pool_pe)
        nb = self._cache(where, cache)
        self._i32(where, "tile_slots", tile_slots, (None,), ("num_tiles",))
        n = tile_slots.shape[0]
        self._i32(where, "tile_blocks", tile_blocks, (n,))
        if check_indices:
            _range(where, "tile_slots", tile_slots, 0, slots - 1)
            _range(where, "tile_blocks", tile_blocks, 0, nb - 1)
        if n:
            self.kernels.flush(pool_latent, pool_pe, tile_slots, tile_blocks,
                               cache, n, stream=self._stream())

    def workspace(self, batch_capacity, max_blocks):
        """An MlaDecodeWorkspace for this shape (made once, then reused;
        each keeps its scratch for the MlaKernelSet's life: a deployment
        makes one for its largest batch and table)."""
        key = (batch_capacity, max_blocks)
        if key not in self._workspaces:
            self._workspaces[key] = MlaDecodeWorkspace(self, *key)
        return self._workspaces[key]

    def split_count(self, batch_capacity, max_blocks):
        """The runtime's split count for a deployment (fixed per shape)."""
        return self.workspace(batch_capacity, max_blocks).num_splits

    def decode(self, q, block_table, seq_lens, block_to_slot, cache,
               pool_latent, pool_pe, out=None, softmax_scale=None,
               workspace=None, check_indices=True):
        """Attention of the absorbed query q [batch, heads, kv_lora_rank +
        rope_dim] over request b's first seq_lens[b] tokens (block i of it
        block_table[b, i]); returns out [batch, heads, kv_lora_rank] (given
        or new; rows of empty requests left as they were). softmax_scale
        has no default: MLA models scale by their q/k head dim, not the
        latent's. The split count and mla_decode_split's scratch come from
        `workspace` (an MlaDecodeWorkspace; by default one made for this
        batch and width and kept): a graph-captured decode passes the
        workspace and `out` it captured with, as KernelSet.decode."""
        where = "kvarn.torch.MlaKernelSet.decode"
        slots = self._pool(where, pool_latent, pool_pe)
        nb = self._cache(where, cache)
        names = ("batch", "num_heads", "kv_lora_rank + rope_dim")
        _tensor(where, "q", q, (None, self.heads, self.rank + self.rope_dim),
                self.dtype, self.device, names)
        batch = q.shape[0]
        self._i32(where, "block_table", block_table, (batch, None),
                  ("batch", "max_blocks"))
        max_blocks = block_table.shape[1]
        self._i32(where, "seq_lens", seq_lens, (batch,))
        self._i32(where, "block_to_slot", block_to_slot, (nb,),
                  ("num_blocks of cache",))
        if softmax_scale is None:
            raise KvarnArgumentError("%s: softmax_scale is required" % where)
        shape = (batch, self.heads, self.rank)
        if out is None:
            out = torch.zeros(shape, dtype=self.dtype, device=self.device)
        else:
            _tensor(where, "out", out, shape, self.dtype, self.device,
                    ("batch", "num_heads", "kv_lora_rank"))
        if batch == 0:
            return out
        if max_blocks == 0:
            raise KvarnArgumentError("%s: block_table has no columns" % where)
        if check_indices:
            _check_decode_indices(where, seq_lens, block_table, block_to_slot,
                                  self.block_size, nb, slots)
        ws = workspace if workspace is not None else \
            self.workspace(batch, max_blocks)
        _check_workspace(where, ws, MlaDecodeWorkspace,
                         "an MlaDecodeWorkspace", "MlaKernelSet.workspace",
                         "num_heads, kv_lora_rank, device",
                         (self.heads, self.rank, self.device),
                         [("requests", "batch_capacity", batch, False),
                          ("blocks", "max_blocks", max_blocks, False)])
        s = self._stream()
        if ws.num_splits == 1:
            self.kernels.decode(q, block_table, seq_lens, block_to_slot, cache,
                                pool_latent, pool_pe, out, softmax_scale,
                                batch, max_blocks, stream=s)
        else:
            self.kernels.decode_split(q, block_table, seq_lens, block_to_slot,
                                      cache, pool_latent, pool_pe, ws.part_out,
                                      ws.part_lse, out, softmax_scale, batch,
                                      max_blocks, ws.num_splits, stream=s)
        return out


class _StreamGuard:
    """Orders the pool's own stream (its context's) after the caller's
    current stream on entry, and the current stream after it on exit, when
    they differ: work stays in the caller's stream order."""

    def __init__(self, cache):
        self.cache = cache

    def __enter__(self):
        c = self.cache
        self.cur = torch.cuda.current_stream(c.device)
        if self.cur != c.stream:
            c.stream.wait_stream(self.cur)

    def __exit__(self, *exc):
        c = self.cache
        if self.cur != c.stream:
            self.cur.wait_stream(c.stream)


class PagedKVCache:
    """kvarn's managed pool (every layer's records and fp16 pool, the
    bookkeeping of blocks, slots, sinks, commits) driven with tensors:

        cache.add_request(7)
        cache.begin([7], [prompt_len])              # tokens appended
        for l in layers: cache.write_kv(l, k, v)    # [tokens, Hk, D]
        cache.commit(); cache.flush()
        cache.begin([7], [1])
        for l in layers:
            cache.write_kv(l, k, v)                 # [1, Hk, D]
            out = cache.decode(l, q)                # [1, Hq, D]
        cache.commit(); cache.flush()

    dtype: the model's activation dtype. The pool's steps take fp16, so
    bf16 k, v and q are converted to fp16 on the way in and decode's output
    back to bf16 (values past fp16's range, 65504, would become inf). The
    step's decode chooses decode or decode_split and the split count
    itself. Steps upload their tables from host memory, so they are not
    for graph capture (KernelSet is). Device work runs on the pool's stream
    (the current stream at construction) ordered after and before the
    caller's current stream."""

    def __init__(self, num_layers, num_kv_heads, num_q_heads, head_dim,
                 num_blocks, pool_slots, max_requests, max_blocks_per_request,
                 preset="kvarn_k4v2_g128", device=None, dtype=torch.float16):
        self.device = _device(device)
        activation_dtype_name(dtype)
        self.dtype = dtype
        self.num_layers, self.num_kv_heads = num_layers, num_kv_heads
        self.num_q_heads, self.head_dim = num_q_heads, head_dim
        self.stream = torch.cuda.current_stream(self.device)
        self.context = _api.Context(self.device.index, self.stream)
        self.pool = _api.Pool(self.context, num_layers, num_kv_heads,
                              num_q_heads, head_dim, num_blocks, pool_slots,
                              max_requests, max_blocks_per_request,
                              preset=preset)
        self.block_size = _api.record_layout(preset, head_dim).group
        self._step = self.pool.step()
        self._counts = None  # of the open step

    def close(self):
        self._step.close()
        self.pool.close()
        self.context.close()

    # -- requests ------------------------------------------------------------

    def add_request(self, request):
        self.pool.add_request(request)

    def finish(self, request):
        self.pool.finish(request)

    def free(self, request):
        self.pool.free(request)

    def preempt(self, request):
        self.pool.preempt(request)

    def request_info(self, request):
        return self.pool.request_info(request)

    def stats(self):
        return self.pool.stats()

    # -- steps ---------------------------------------------------------------

    def begin(self, ids, counts):
        """Appends counts[i] tokens to request ids[i] (all or nothing)."""
        ids, counts = list(ids), list(counts)
        with _StreamGuard(self):
            self._step.begin(ids, counts)
        self._counts = counts

    def _open(self, where):
        if self._counts is None:
            raise KvarnArgumentError("%s: no open step (call begin first)"
                                     % where)

    def _layer(self, where, layer):
        _int(where, "layer", layer, 0, self.num_layers - 1)

    def _act(self, where, name, t, shape, names):
        _tensor(where, name, t, shape, (torch.float16, torch.bfloat16),
                self.device, names)
        if t.dtype != self.dtype:
            raise KvarnArgumentError("%s: %s has dtype %s but the cache was "
                                     "made for %s" % (where, name, t.dtype,
                                                      self.dtype))
        return t if t.dtype == torch.float16 else t.to(torch.float16)

    def write_kv(self, layer, k, v):
        """k, v [tokens of the step, Hk, D], un-rotated, request after
        request in begin's order."""
        where = "PagedKVCache.write_kv"
        self._open(where)
        self._layer(where, layer)
        n = sum(self._counts)
        names = ("tokens of the step", "num_kv_heads", "head_dim")
        shape = (n, self.num_kv_heads, self.head_dim)
        k16 = self._act(where, "k", k, shape, names)
        v16 = self._act(where, "v", v, shape, names)
        with _StreamGuard(self):
            self._step.write_kv(layer, k16, v16)
            k16.record_stream(self.stream)
            v16.record_stream(self.stream)

    def _scale(self, softmax_scale):
        return 1.0 / math.sqrt(self.head_dim) if softmax_scale is None \
            else softmax_scale

    def decode(self, layer, q, out=None, softmax_scale=None):
        """Every count 1: q [requests, Hq, D] -> out [requests, Hq, D], each
        request's query over its tokens (this step's included)."""
        where = "PagedKVCache.decode"
        self._open(where)
        self._layer(where, layer)
        if any(c != 1 for c in self._counts):
            raise KvarnArgumentError("%s: every count of the step must be 1 "
                                     "(use verify)" % where)
        names = ("requests of the step", "num_q_heads", "head_dim")
        shape = (len(self._counts), self.num_q_heads, self.head_dim)
        return self._attend(where, self._step.decode, layer, q, out, shape,
                            names, softmax_scale)

    def verify(self, layer, q, out=None, softmax_scale=None):
        """Any counts: q [requests, max count, Hq, D]; token j of request i
        attends to its first length - counts[i] + j + 1 tokens; rows
        j >= counts[i] of out are not written."""
        where = "PagedKVCache.verify"
        self._open(where)
        self._layer(where, layer)
        names = ("requests of the step", "max count", "num_q_heads",
                 "head_dim")
        shape = (len(self._counts), max(self._counts), self.num_q_heads,
                 self.head_dim)
        return self._attend(where, self._step.verify, layer, q, out, shape,
                            names, softmax_scale)

    def _attend(self, where, fn, layer, q, out, shape, names, softmax_scale):
        q16 = self._act(where, "q", q, shape, names)
        if out is not None:
            _tensor(where, "out", out, shape, self.dtype, self.device, names)
        o16 = out if out is not None and out.dtype == torch.float16 else \
            torch.zeros(shape, dtype=torch.float16, device=self.device)
        with _StreamGuard(self):
            fn(layer, q16, o16, self._scale(softmax_scale))
            q16.record_stream(self.stream)
            o16.record_stream(self.stream)
        if o16 is out:
            return out
        if out is not None:
            out.copy_(o16)
            return out
        return o16 if self.dtype == torch.float16 else o16.to(self.dtype)

    def commit(self, accepted=None):
        with _StreamGuard(self):
            self._step.commit(accepted)
        self._counts = None

    def flush(self):
        """Quantizes every full, committed block that is not a sink: one
        launch for all layers. Returns how many."""
        with _StreamGuard(self):
            return self.pool.flush()
