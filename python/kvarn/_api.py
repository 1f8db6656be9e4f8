"""The ctypes layer: one Python function or method per C API entry point."""

import ctypes
import os
from ctypes import (POINTER, Structure, byref, c_char_p, c_double, c_float,
                    c_int, c_int32, c_int64, c_size_t, c_uint64, c_void_p)

_lib = None


class KvarnError(RuntimeError):
    """A kvarn call failed: .status is the status name (e.g.
    'KVARN_ERROR_POOL_EXHAUSTED'), .code its number, str() the message."""

    def __init__(self, code, status, message):
        super().__init__("%s: %s" % (status, message))
        self.code = code
        self.status = status
        self.message = message


def _candidates():
    env = os.environ.get("KVARN_LIBRARY")
    if env:
        yield env
    here = os.path.dirname(os.path.abspath(__file__))
    yield os.path.join(here, "libkvarn.so.0")
    yield os.path.join(here, "libkvarn.so")
    # An install: <prefix>/lib/python3/site-packages/kvarn -> <prefix>/lib.
    yield os.path.join(here, "..", "..", "..", "libkvarn.so.0")
    yield "libkvarn.so.0"


def library():
    """The loaded libkvarn.so (a ctypes.CDLL), loading it on first use."""
    global _lib
    if _lib is not None:
        return _lib
    errors = []
    for path in _candidates():
        try:
            lib = ctypes.CDLL(path)
            break
        except OSError as e:
            errors.append("%s: %s" % (path, e))
    else:
        raise OSError("kvarn: cannot load libkvarn.so (set KVARN_LIBRARY):\n  "
                      + "\n  ".join(errors))
    _declare(lib)
    _lib = lib
    return lib


class RecordLayout(Structure):
    _fields_ = [(n, c_int32) for n in ("head_dim", "group", "key_bits",
                                       "value_bits", "sinkhorn_iters")] + \
               [(n, c_int64) for n in ("k_codes_offset", "k_scale_offset",
                                       "k_zero_offset", "k_token_scale_offset",
                                       "v_codes_offset",
                                       "v_channel_scale_offset",
                                       "v_scale_offset", "v_zero_offset",
                                       "unaligned_bytes", "record_bytes")]


class CacheShape(Structure):
    _fields_ = [(n, c_int64) for n in ("num_blocks", "num_kv_heads",
                                       "record_bytes", "block_size",
                                       "head_dim", "pool_slots", "cache_bytes",
                                       "pool_bytes")]


class Capacity(Structure):
    _fields_ = [("num_blocks", c_int64), ("pool_slots", c_int64),
                ("tokens", c_int64), ("used_bytes", c_int64),
                ("record_bytes_per_token", c_double),
                ("bytes_per_token", c_double), ("fp16_tokens", c_int64),
                ("ratio_vs_fp16", c_double)]


class _PoolConfig(Structure):
    _fields_ = [("preset", c_char_p)] + [(n, c_int32) for n in (
        "num_layers", "num_kv_heads", "num_q_heads", "head_dim", "block_size",
        "num_blocks", "pool_slots", "max_requests", "max_blocks_per_request")]


class _RequestInfo(Structure):
    _fields_ = [(n, c_int32) for n in ("live", "length", "committed",
                                       "num_blocks")]


class _PoolStats(Structure):
    _fields_ = [(n, c_int32) for n in ("num_requests", "free_blocks",
                                       "free_slots", "pending_flush",
                                       "open_steps")]


class _PoolBuffers(Structure):
    _fields_ = [(n, c_uint64) for n in ("cache", "pool_k", "pool_v",
                                        "block_to_slot")] + \
               [("cache_layer_stride", c_int64), ("pool_layer_stride", c_int64)]


_P = c_uint64  # kvarn_devptr_t
_H = c_void_p  # opaque handles and streams

# name: (argument types); every one returns kvarn_status_t unless listed in
# _RESTYPES.
_SIGNATURES = {
    "kvarn_version": (),
    "kvarn_status_string": (c_int,),
    "kvarn_last_error": (),
    "kvarn_preset_count": (),
    "kvarn_preset_name": (c_size_t,),
    "kvarn_record_layout": (c_char_p, c_int32, POINTER(RecordLayout)),
    "kvarn_cuda_available": (POINTER(c_int),),
    "kvarn_cache_shape": (c_char_p, c_int32, c_int32, c_int64, c_int64,
                          POINTER(CacheShape)),
    "kvarn_decode_split_scratch_bytes": (c_int32, c_int32, c_int32, c_int32,
                                         POINTER(c_int64), POINTER(c_int64)),
    "kvarn_capacity_plan": (c_char_p, c_int32, c_int32, c_int32, c_int64,
                            c_int64, c_int64, POINTER(Capacity)),
    "kvarn_context_create": (c_int, _H, POINTER(_H)),
    "kvarn_context_destroy": (_H,),
    "kvarn_context_synchronize": (_H,),
    "kvarn_kernels_create": (_H, c_char_p, c_int32, c_int32, POINTER(_H)),
    "kvarn_kernels_create_dtype": (_H, c_char_p, c_int32, c_int32, c_char_p,
                                   POINTER(_H)),
    "kvarn_kernels_destroy": (_H,),
    "kvarn_kernels_load": (_H, c_char_p),
    "kvarn_append": (_H, _H) + (_P,) * 6 + (c_int32, c_int32),
    "kvarn_flush": (_H, _H) + (_P,) * 5 + (c_int32, c_int32),
    "kvarn_decode": (_H, _H) + (_P,) * 8 + (c_float, c_int32, c_int32, c_int32),
    "kvarn_decode_split": (_H, _H) + (_P,) * 10 +
                          (c_float, c_int32, c_int32, c_int32, c_int32),
    "kvarn_verify": (_H, _H) + (_P,) * 9 +
                    (c_float, c_int32, c_int32, c_int32, c_int32),
    "kvarn_materialize": (_H, _H) + (_P,) * 9 + (c_int32, c_int32, c_int32),
    "kvarn_pool_create": (_H, POINTER(_PoolConfig), POINTER(_H)),
    "kvarn_pool_destroy": (_H,),
    "kvarn_pool_add_request": (_H, c_int64),
    "kvarn_pool_finish": (_H, c_int64),
    "kvarn_pool_preempt": (_H, c_int64),
    "kvarn_pool_free": (_H, c_int64),
    "kvarn_pool_share_prefix": (_H, c_int64, c_int64, c_int32),
    "kvarn_pool_flush": (_H, POINTER(c_int32)),
    "kvarn_pool_request_info": (_H, c_int64, POINTER(_RequestInfo)),
    "kvarn_pool_request_blocks": (_H, c_int64, POINTER(c_int32), c_int32,
                                  POINTER(c_int32)),
    "kvarn_pool_stats": (_H, POINTER(_PoolStats)),
    "kvarn_pool_capacity": (_H, POINTER(Capacity)),
    "kvarn_pool_buffers": (_H, POINTER(_PoolBuffers)),
    "kvarn_pool_block_to_slot": (_H, POINTER(c_int32), c_int32),
    "kvarn_step_create": (_H, POINTER(_H)),
    "kvarn_step_destroy": (_H,),
    "kvarn_step_begin": (_H, c_int32, POINTER(c_int64), POINTER(c_int32)),
    "kvarn_step_write_kv": (_H, c_int32, _P, _P),
    "kvarn_step_decode": (_H, c_int32, _P, _P, c_float),
    "kvarn_step_verify": (_H, c_int32, _P, _P, c_float),
    "kvarn_step_slot_mapping": (_H, POINTER(c_int32), c_int32,
                                POINTER(c_int32)),
    "kvarn_step_commit": (_H, POINTER(c_int32)),
}
_RESTYPES = {
    "kvarn_version": c_char_p,
    "kvarn_status_string": c_char_p,
    "kvarn_last_error": c_char_p,
    "kvarn_preset_count": c_size_t,
    "kvarn_preset_name": c_char_p,
}


def _declare(lib):
    for name, args in _SIGNATURES.items():
        fn = getattr(lib, name)
        fn.argtypes = list(args)
        fn.restype = _RESTYPES.get(name, c_int)


def _check(status):
    if status != 0:
        lib = library()
        raise KvarnError(status, lib.kvarn_status_string(status).decode(),
                         lib.kvarn_last_error().decode())


def _call(name, *args):
    _check(getattr(library(), name)(*args))


def _ptr(x):
    """A device pointer from a tensor (data_ptr()), an int, or None (0)."""
    if x is None:
        return 0
    if hasattr(x, "data_ptr"):
        return int(x.data_ptr())
    return int(x)


def _stream(s):
    """A CUstream from None, an int, or a torch.cuda.Stream."""
    if s is None:
        return None
    if hasattr(s, "cuda_stream"):
        return int(s.cuda_stream)
    return int(s)


def _bytes(s):
    return None if s is None else s.encode()


def version():
    return library().kvarn_version().decode()


def presets():
    lib = library()
    return [lib.kvarn_preset_name(i).decode()
            for i in range(lib.kvarn_preset_count())]


def record_layout(preset="kvarn_k4v2_g128", head_dim=128):
    out = RecordLayout()
    _call("kvarn_record_layout", _bytes(preset), head_dim, byref(out))
    return out


def cache_shape(preset, head_dim, num_kv_heads, num_blocks, pool_slots):
    out = CacheShape()
    _call("kvarn_cache_shape", _bytes(preset), head_dim, num_kv_heads,
          num_blocks, pool_slots, byref(out))
    return out


def capacity_plan(preset, head_dim, num_layers, num_kv_heads, budget_bytes,
                  concurrent_requests, pool_slots=-1):
    out = Capacity()
    _call("kvarn_capacity_plan", _bytes(preset), head_dim, num_layers,
          num_kv_heads, budget_bytes, concurrent_requests, pool_slots,
          byref(out))
    return out


def cuda_available():
    """The number of GPUs, or raises KvarnError saying why there is none."""
    n = c_int(0)
    _call("kvarn_cuda_available", byref(n))
    return n.value


class _Handle:
    _destroy = None

    def __init__(self):
        self._h = _H()

    def close(self):
        if self._h and self._h.value:
            _call(self._destroy, self._h)
            self._h = _H()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Context(_Handle):
    """A GPU's primary context; launches default to `stream`."""
    _destroy = "kvarn_context_destroy"

    def __init__(self, device=0, stream=None):
        super().__init__()
        _call("kvarn_context_create", device, _stream(stream), byref(self._h))

    def synchronize(self):
        _call("kvarn_context_synchronize", self._h)


class Kernels(_Handle):
    """The kernels of one (preset, head_dim, GQA ratio, activation dtype
    "f16" or "bf16"), on caller buffers. Argument order is docs/dsl.md's;
    tensors or ints as pointers."""
    _destroy = "kvarn_kernels_destroy"

    def __init__(self, context, preset="kvarn_k4v2_g128", head_dim=128, gqa=1,
                 dtype="f16"):
        super().__init__()
        self.context = context
        _call("kvarn_kernels_create_dtype", context._h, _bytes(preset),
              head_dim, gqa, _bytes(dtype), byref(self._h))

    def load(self, names=None):
        _call("kvarn_kernels_load", self._h, _bytes(names))

    def append(self, k, v, slot_mapping, block_to_slot, pool_k, pool_v,
               num_tokens, num_kv_heads, stream=None):
        _call("kvarn_append", self._h, _stream(stream), *map(_ptr, (
            k, v, slot_mapping, block_to_slot, pool_k, pool_v)),
            num_tokens, num_kv_heads)

    def flush(self, pool_k, pool_v, tile_slots, tile_blocks, cache, num_tiles,
              num_kv_heads, stream=None):
        _call("kvarn_flush", self._h, _stream(stream), *map(_ptr, (
            pool_k, pool_v, tile_slots, tile_blocks, cache)),
            num_tiles, num_kv_heads)

    def decode(self, q, block_table, seq_lens, block_to_slot, cache, pool_k,
               pool_v, out, softmax_scale, batch, max_blocks, num_kv_heads,
               stream=None):
        _call("kvarn_decode", self._h, _stream(stream), *map(_ptr, (
            q, block_table, seq_lens, block_to_slot, cache, pool_k, pool_v,
            out)), softmax_scale, batch, max_blocks, num_kv_heads)

    def decode_split(self, q, block_table, seq_lens, block_to_slot, cache,
                     pool_k, pool_v, part_out, part_lse, out, softmax_scale,
                     batch, max_blocks, num_kv_heads, num_splits, stream=None):
        _call("kvarn_decode_split", self._h, _stream(stream), *map(_ptr, (
            q, block_table, seq_lens, block_to_slot, cache, pool_k, pool_v,
            part_out, part_lse, out)), softmax_scale, batch, max_blocks,
            num_kv_heads, num_splits)

    def verify(self, q, block_table, context_lens, query_lens, block_to_slot,
               cache, pool_k, pool_v, out, softmax_scale, batch,
               max_query_tokens, max_blocks, num_kv_heads, stream=None):
        _call("kvarn_verify", self._h, _stream(stream), *map(_ptr, (
            q, block_table, context_lens, query_lens, block_to_slot, cache,
            pool_k, pool_v, out)), softmax_scale, batch, max_query_tokens,
            max_blocks, num_kv_heads)

    def materialize(self, block_table, seq_lens, block_to_slot, cache, pool_k,
                    pool_v, out_start, out_k, out_v, batch, max_blocks,
                    num_kv_heads, stream=None):
        _call("kvarn_materialize", self._h, _stream(stream), *map(_ptr, (
            block_table, seq_lens, block_to_slot, cache, pool_k, pool_v,
            out_start, out_k, out_v)), batch, max_blocks, num_kv_heads)


def _i64s(xs):
    xs = list(xs)
    return (c_int64 * max(len(xs), 1))(*xs), len(xs)


def _i32s(xs):
    xs = list(xs)
    return (c_int32 * max(len(xs), 1))(*xs), len(xs)


class Pool(_Handle):
    """The managed pool (kvarn_pool_*). context=None: bookkeeping only."""
    _destroy = "kvarn_pool_destroy"

    def __init__(self, context, num_layers, num_kv_heads, num_q_heads,
                 head_dim, num_blocks, pool_slots, max_requests,
                 max_blocks_per_request, preset="kvarn_k4v2_g128",
                 block_size=0):
        super().__init__()
        self.context = context
        self.num_blocks = num_blocks
        cfg = _PoolConfig(_bytes(preset), num_layers, num_kv_heads,
                          num_q_heads, head_dim, block_size, num_blocks,
                          pool_slots, max_requests, max_blocks_per_request)
        _call("kvarn_pool_create", context._h if context else None,
              byref(cfg), byref(self._h))

    def add_request(self, request):
        _call("kvarn_pool_add_request", self._h, request)

    def finish(self, request):
        _call("kvarn_pool_finish", self._h, request)

    def preempt(self, request):
        _call("kvarn_pool_preempt", self._h, request)

    def free(self, request):
        _call("kvarn_pool_free", self._h, request)

    def share_prefix(self, dst, src, tokens):
        _call("kvarn_pool_share_prefix", self._h, dst, src, tokens)

    def flush(self):
        n = c_int32(0)
        _call("kvarn_pool_flush", self._h, byref(n))
        return n.value

    def request_info(self, request):
        out = _RequestInfo()
        _call("kvarn_pool_request_info", self._h, request, byref(out))
        return {"live": bool(out.live), "length": out.length,
                "committed": out.committed, "num_blocks": out.num_blocks}

    def request_blocks(self, request):
        n = c_int32(0)
        _call("kvarn_pool_request_blocks", self._h, request, None, 0, byref(n))
        buf = (c_int32 * max(n.value, 1))()
        _call("kvarn_pool_request_blocks", self._h, request, buf, n.value,
              byref(n))
        return list(buf[:n.value])

    def stats(self):
        out = _PoolStats()
        _call("kvarn_pool_stats", self._h, byref(out))
        return {f: getattr(out, f) for f, _ in _PoolStats._fields_}

    def capacity(self):
        out = Capacity()
        _call("kvarn_pool_capacity", self._h, byref(out))
        return out

    def buffers(self):
        out = _PoolBuffers()
        _call("kvarn_pool_buffers", self._h, byref(out))
        return {f: getattr(out, f) for f, _ in _PoolBuffers._fields_}

    def block_to_slot(self):
        buf = (c_int32 * self.num_blocks)()
        _call("kvarn_pool_block_to_slot", self._h, buf, self.num_blocks)
        return list(buf)

    def step(self):
        return Step(self)


class Step(_Handle):
    """One serving step over some requests of a pool (see kvarn.h)."""
    _destroy = "kvarn_step_destroy"

    def __init__(self, pool):
        super().__init__()
        self.pool = pool
        _call("kvarn_step_create", pool._h, byref(self._h))

    def begin(self, ids, counts):
        ids, n = _i64s(ids)
        counts, m = _i32s(counts)
        if n != m:
            raise ValueError("begin: %d ids but %d counts" % (n, m))
        _call("kvarn_step_begin", self._h, n, ids, counts)

    def write_kv(self, layer, k, v):
        _call("kvarn_step_write_kv", self._h, layer, _ptr(k), _ptr(v))

    def decode(self, layer, q, out, softmax_scale):
        _call("kvarn_step_decode", self._h, layer, _ptr(q), _ptr(out),
              softmax_scale)

    def verify(self, layer, q, out, softmax_scale):
        _call("kvarn_step_verify", self._h, layer, _ptr(q), _ptr(out),
              softmax_scale)

    def slot_mapping(self):
        n = c_int32(0)
        _call("kvarn_step_slot_mapping", self._h, None, 0, byref(n))
        buf = (c_int32 * max(n.value, 1))()
        _call("kvarn_step_slot_mapping", self._h, buf, n.value, byref(n))
        return list(buf[:n.value])

    def commit(self, accepted=None):
        if accepted is None:
            _call("kvarn_step_commit", self._h, None)
        else:
            arr, _ = _i32s(accepted)
            _call("kvarn_step_commit", self._h, arr)
