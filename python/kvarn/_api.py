"""The ctypes layer: one Python function or method per C API entry point."""

import ctypes
import math
import numbers
import operator
import os
from ctypes import (POINTER, Structure, byref, c_char_p, c_double, c_float,
                    c_int, c_int32, c_int64, c_size_t, c_uint32, c_uint64,
                    c_void_p, cast, sizeof)

_lib = None


class KvarnError(RuntimeError):
    """A kvarn call failed: .status is the status name (e.g.
    'KVARN_ERROR_POOL_EXHAUSTED'), .code its number, str() the message."""

    def __init__(self, code, status, message):
        super().__init__("%s: %s" % (status, message))
        self.code = code
        self.status = status
        self.message = message


class KvarnArgumentError(KvarnError, ValueError):
    """An argument rejected before it reaches libkvarn: a value out of its C
    type's range (ctypes would wrap it silently), of the wrong type, or a
    list of the wrong length. .status is 'KVARN_ERROR_INVALID_ARGUMENT'."""

    def __init__(self, message):
        super().__init__(1, "KVARN_ERROR_INVALID_ARGUMENT", message)


def _int_range(ctype):
    bits = 8 * ctypes.sizeof(ctype)
    signed = ctype(-1).value < 0
    return (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed \
        else (0, (1 << bits) - 1)


# The integer types of the signatures below (c_int, c_size_t are aliases of
# some of these).
_C_NAMES = {ctypes.c_int32: "int32_t", ctypes.c_int64: "int64_t",
            ctypes.c_uint64: "uint64_t"}
_FLT_MAX = 3.4028234663852886e38


def _as_int(where, value, ctype):
    """`value` as an int within `ctype`'s range, or KvarnArgumentError."""
    if isinstance(value, bool):
        raise KvarnArgumentError("%s must be an integer, not a bool" % where)
    try:
        v = operator.index(value)
    except TypeError:
        raise KvarnArgumentError("%s must be an integer, not %s"
                                 % (where, type(value).__name__)) from None
    lo, hi = _int_range(ctype)
    if not lo <= v <= hi:
        raise KvarnArgumentError("%s = %d does not fit in %s [%d, %d]"
                                 % (where, v, _C_NAMES.get(ctype, ctype.__name__),
                                    lo, hi))
    return v


def _checked(where, ctype, value):
    """`value` for a parameter of C type `ctype`, checked: ctypes itself wraps
    ints out of range, turns floats past FLT_MAX into inf and cuts strings at
    a NUL, all silently."""
    if ctype in _C_NAMES:
        return _as_int(where, value, ctype)
    if ctype is ctypes.c_float:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise KvarnArgumentError("%s must be a number, not %s"
                                     % (where, type(value).__name__))
        v = float(value)
        if not math.isfinite(v) or abs(v) > _FLT_MAX:
            raise KvarnArgumentError("%s = %r is not a finite float" % (where, v))
        return v
    if ctype is ctypes.c_void_p:  # handles (c_void_p), streams (ints), None
        if value is None or isinstance(value, ctypes.c_void_p):
            return value
        return _as_int(where, value, ctypes.c_uint64)
    if ctype is ctypes.c_char_p:
        if value is not None and (not isinstance(value, bytes) or b"\0" in value):
            raise KvarnArgumentError("%s must be a str without NUL characters"
                                     % where)
        return value
    return value  # pointers to the library's own structures and arrays


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


class MlaRecordLayout(Structure):
    _fields_ = [(n, c_int32) for n in ("kv_lora_rank", "rope_dim", "group",
                                       "bits", "sinkhorn_iters")] + \
               [(n, c_int64) for n in ("codes_offset", "scale_offset",
                                       "zero_offset", "token_scale_offset",
                                       "rope_offset", "record_bytes")]


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


class _LayerConfig(Structure):
    _fields_ = [("kind", c_int32), ("window", c_int32), ("preset", c_char_p)]


class _PoolOptions(Structure):
    _fields_ = [("struct_size", c_uint32), ("layer_config_size", c_uint32),
                ("layers", POINTER(_LayerConfig))]


class _LayerInfo(Structure):
    _fields_ = [("struct_size", c_uint32), ("kind", c_int32),
                ("window", c_int32), ("preset", c_char_p)] + \
               [(n, c_int64) for n in ("record_bytes", "cache_bytes",
                                       "pool_bytes", "fp16_bytes")] + \
               [(n, c_uint64) for n in ("cache", "pool_k", "pool_v",
                                        "block_to_slot")]


# kvarn_layer_kind_t
LAYER_KINDS = ("kvarn", "fp16", "absent")


def _layer_dict(info):
    return {"kind": LAYER_KINDS[info.kind] if 0 <= info.kind < 3 else info.kind,
            "window": info.window,
            "preset": info.preset.decode() if info.preset else None,
            "record_bytes": info.record_bytes,
            "cache_bytes": info.cache_bytes, "pool_bytes": info.pool_bytes,
            "total_bytes": info.cache_bytes + info.pool_bytes,
            "fp16_bytes": info.fp16_bytes, "cache": info.cache,
            "pool_k": info.pool_k, "pool_v": info.pool_v,
            "block_to_slot": info.block_to_slot}


def _pool_options(fn, num_layers, layers):
    """kvarn_pool_options_t for `layers` (None: every layer kvarn): a list of
    kinds ("kvarn", "fp16", "absent") or dicts {"kind", "window", "preset"}.
    Returns (options or None, what must outlive the call)."""
    if layers is None:
        return None, None
    layers = list(layers)
    if len(layers) != num_layers:
        raise KvarnArgumentError("%s: %d layer configs for num_layers = %d"
                                 % (fn, len(layers), num_layers))
    arr = (_LayerConfig * max(len(layers), 1))()
    for i, l in enumerate(layers):
        d = {"kind": l} if isinstance(l, str) else dict(l)
        unknown = set(d) - {"kind", "window", "preset"}
        if unknown:
            raise KvarnArgumentError("%s: layer %d: unknown keys %s"
                                     % (fn, i, sorted(unknown)))
        kind = d.get("kind", "kvarn")
        if kind not in LAYER_KINDS:
            raise KvarnArgumentError(
                "%s: layer %d: kind %r is not one of %s"
                % (fn, i, kind, ", ".join(LAYER_KINDS)))
        arr[i].kind = LAYER_KINDS.index(kind)
        arr[i].window = _as_int("%s: layer %d window" % (fn, i),
                                d.get("window", 0), c_int32)
        preset = d.get("preset")
        if preset is not None and (not isinstance(preset, str) or
                                   "\0" in preset):
            raise KvarnArgumentError("%s: layer %d: preset must be a str "
                                     "without NUL characters" % (fn, i))
        arr[i].preset = _bytes(preset)
    opts = _PoolOptions(sizeof(_PoolOptions), sizeof(_LayerConfig),
                        cast(arr, POINTER(_LayerConfig)))
    return opts, arr


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
    "kvarn_mla_preset_count": (),
    "kvarn_mla_preset_name": (c_size_t,),
    "kvarn_mla_record_layout": (c_char_p, c_int32, c_int32,
                                POINTER(MlaRecordLayout)),
    "kvarn_can_compile": (),
    "kvarn_cuda_available": (POINTER(c_int),),
    "kvarn_mla_capacity_plan": (c_char_p, c_int32, c_int32, c_int32, c_int64,
                                c_int64, c_int64, POINTER(Capacity)),
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
    "kvarn_decode_split_count": (_H, c_int32, c_int32, c_int32,
                                 POINTER(c_int32)),
    "kvarn_verify": (_H, _H) + (_P,) * 9 +
                    (c_float, c_int32, c_int32, c_int32, c_int32),
    "kvarn_decode_window": (_H, _H) + (_P,) * 8 +
                           (c_float, c_int32, c_int32, c_int32, c_int32),
    "kvarn_decode_split_window": (_H, _H) + (_P,) * 10 +
                                 (c_float,) + (c_int32,) * 5,
    "kvarn_verify_window": (_H, _H) + (_P,) * 9 + (c_float,) + (c_int32,) * 5,
    "kvarn_materialize": (_H, _H) + (_P,) * 9 + (c_int32, c_int32, c_int32),
    "kvarn_mla_kernels_create": (_H, c_char_p, c_int32, c_int32, c_int32,
                                 c_char_p, POINTER(_H)),
    "kvarn_mla_append": (_H, _H) + (_P,) * 6 + (c_int32,),
    "kvarn_mla_flush": (_H, _H) + (_P,) * 5 + (c_int32,),
    "kvarn_mla_decode": (_H, _H) + (_P,) * 8 + (c_float, c_int32, c_int32),
    "kvarn_mla_decode_split": (_H, _H) + (_P,) * 10 +
                              (c_float, c_int32, c_int32, c_int32),
    "kvarn_mla_decode_split_scratch_bytes": (c_int32, c_int32, c_int32,
                                             POINTER(c_int64),
                                             POINTER(c_int64)),
    "kvarn_mla_decode_split_count": (_H, c_int32, c_int32, POINTER(c_int32)),
    "kvarn_mla_verify": (_H, _H) + (_P,) * 9 + (c_float, c_int32, c_int32,
                                                c_int32),
    "kvarn_pool_create": (_H, POINTER(_PoolConfig), POINTER(_H)),
    "kvarn_pool_create_ex": (_H, POINTER(_PoolConfig), POINTER(_PoolOptions),
                             POINTER(_H)),
    "kvarn_mla_pool_create": (_H, POINTER(_PoolConfig), c_int32, POINTER(_H)),
    "kvarn_pool_layer_info": (_H, c_int32, POINTER(_LayerInfo)),
    "kvarn_capacity_plan_ex": (POINTER(_PoolConfig), POINTER(_PoolOptions),
                               c_int64, c_int64, c_int64, POINTER(Capacity),
                               POINTER(_LayerInfo), c_int32),
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
# Parameter names, as kvarn.h has them (the python-package test checks), for
# the messages of arguments rejected before they cross into C.
_PARAMS = {
    "kvarn_version": "",
    "kvarn_status_string": "status",
    "kvarn_last_error": "",
    "kvarn_preset_count": "",
    "kvarn_preset_name": "index",
    "kvarn_record_layout": "preset head_dim out",
    "kvarn_mla_preset_count": "",
    "kvarn_mla_preset_name": "index",
    "kvarn_mla_record_layout": "preset kv_lora_rank rope_dim out",
    "kvarn_can_compile": "",
    "kvarn_cuda_available": "device_count",
    "kvarn_mla_capacity_plan": ("preset kv_lora_rank rope_dim num_layers "
        "budget_bytes concurrent_requests pool_slots out"),
    "kvarn_cache_shape": ("preset head_dim num_kv_heads num_blocks "
        "pool_slots out"),
    "kvarn_decode_split_scratch_bytes": ("batch num_kv_heads gqa head_dim "
        "part_out_bytes part_lse_bytes"),
    "kvarn_capacity_plan": ("preset head_dim num_layers num_kv_heads "
        "budget_bytes concurrent_requests pool_slots out"),
    "kvarn_context_create": "device stream out",
    "kvarn_context_destroy": "context",
    "kvarn_context_synchronize": "context",
    "kvarn_kernels_create": "context preset head_dim gqa out",
    "kvarn_kernels_create_dtype": "context preset head_dim gqa dtype out",
    "kvarn_kernels_destroy": "kernels",
    "kvarn_kernels_load": "kernels names",
    "kvarn_append": ("kernels stream k v slot_mapping block_to_slot pool_k "
        "pool_v num_tokens num_kv_heads"),
    "kvarn_flush": ("kernels stream pool_k pool_v tile_slots tile_blocks "
        "cache num_tiles num_kv_heads"),
    "kvarn_decode": ("kernels stream q block_table seq_lens block_to_slot "
        "cache pool_k pool_v out softmax_scale batch max_blocks num_kv_heads"),
    "kvarn_decode_split": ("kernels stream q block_table seq_lens "
        "block_to_slot cache pool_k pool_v part_out part_lse out "
        "softmax_scale batch max_blocks num_kv_heads num_splits"),
    "kvarn_decode_split_count": ("kernels batch_capacity max_blocks "
        "num_kv_heads num_splits"),
    "kvarn_verify": ("kernels stream q block_table context_lens query_lens "
        "block_to_slot cache pool_k pool_v out softmax_scale batch "
        "max_query_tokens max_blocks num_kv_heads"),
    "kvarn_decode_window": ("kernels stream q block_table seq_lens "
        "block_to_slot cache pool_k pool_v out softmax_scale window batch "
        "max_blocks num_kv_heads"),
    "kvarn_decode_split_window": ("kernels stream q block_table seq_lens "
        "block_to_slot cache pool_k pool_v part_out part_lse out "
        "softmax_scale window batch max_blocks num_kv_heads num_splits"),
    "kvarn_verify_window": ("kernels stream q block_table context_lens "
        "query_lens block_to_slot cache pool_k pool_v out softmax_scale "
        "window batch max_query_tokens max_blocks num_kv_heads"),
    "kvarn_materialize": ("kernels stream block_table seq_lens block_to_slot "
        "cache pool_k pool_v out_start out_k out_v batch max_blocks "
        "num_kv_heads"),
    "kvarn_mla_kernels_create": ("context preset kv_lora_rank rope_dim "
        "num_heads dtype out"),
    "kvarn_mla_append": ("kernels stream latent k_pe slot_mapping "
        "block_to_slot pool_latent pool_pe num_tokens"),
    "kvarn_mla_flush": ("kernels stream pool_latent pool_pe tile_slots "
        "tile_blocks cache num_tiles"),
    "kvarn_mla_decode": ("kernels stream q block_table seq_lens "
        "block_to_slot cache pool_latent pool_pe out softmax_scale batch "
        "max_blocks"),
    "kvarn_mla_decode_split": ("kernels stream q block_table seq_lens "
        "block_to_slot cache pool_latent pool_pe part_out part_lse out "
        "softmax_scale batch max_blocks num_splits"),
    "kvarn_mla_decode_split_scratch_bytes": ("batch num_heads kv_lora_rank "
        "part_out_bytes part_lse_bytes"),
    "kvarn_mla_decode_split_count": ("kernels batch_capacity max_blocks "
        "num_splits"),
    "kvarn_mla_verify": ("kernels stream q block_table context_lens "
        "query_lens block_to_slot cache pool_latent pool_pe out softmax_scale "
        "batch max_query_tokens max_blocks"),
    "kvarn_pool_create": "context config out",
    "kvarn_pool_create_ex": "context config options out",
    "kvarn_mla_pool_create": "context config rope_dim out",
    "kvarn_pool_layer_info": "pool layer out",
    "kvarn_capacity_plan_ex": ("config options budget_bytes "
        "concurrent_requests pool_slots out layers capacity"),
    "kvarn_pool_destroy": "pool",
    "kvarn_pool_add_request": "pool request",
    "kvarn_pool_finish": "pool request",
    "kvarn_pool_preempt": "pool request",
    "kvarn_pool_free": "pool request",
    "kvarn_pool_share_prefix": "pool dst src tokens",
    "kvarn_pool_flush": "pool num_blocks",
    "kvarn_pool_request_info": "pool request out",
    "kvarn_pool_request_blocks": "pool request blocks capacity count",
    "kvarn_pool_stats": "pool out",
    "kvarn_pool_capacity": "pool out",
    "kvarn_pool_buffers": "pool out",
    "kvarn_pool_block_to_slot": "pool out capacity",
    "kvarn_step_create": "pool out",
    "kvarn_step_destroy": "step",
    "kvarn_step_begin": "step n ids counts",
    "kvarn_step_write_kv": "step layer k v",
    "kvarn_step_decode": "step layer q out softmax_scale",
    "kvarn_step_verify": "step layer q out softmax_scale",
    "kvarn_step_slot_mapping": "step out capacity num_tokens",
    "kvarn_step_commit": "step accepted",
}
_RESTYPES = {
    "kvarn_version": c_char_p,
    "kvarn_status_string": c_char_p,
    "kvarn_last_error": c_char_p,
    "kvarn_preset_count": c_size_t,
    "kvarn_preset_name": c_char_p,
    "kvarn_mla_preset_count": c_size_t,
    "kvarn_mla_preset_name": c_char_p,
    "kvarn_can_compile": c_int,
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
    """Calls kvarn `name` after checking every argument against its C type."""
    params = _PARAMS[name].split()
    args = [_checked("%s: %s" % (name, p), t, a)
            for p, t, a in zip(params, _SIGNATURES[name], args)]
    _check(getattr(library(), name)(*args))


def _ptr(x):
    """A device pointer from a tensor (data_ptr()), an int, or None (0).
    An int that is not a valid pointer is rejected by _call."""
    if x is None:
        return 0
    if hasattr(x, "data_ptr"):
        return x.data_ptr()
    return x


def _stream(s):
    """A CUstream from None, an int, or a torch.cuda.Stream."""
    if s is None:
        return None
    if hasattr(s, "cuda_stream"):
        return s.cuda_stream
    return s


def _bytes(s):
    if s is None:
        return None
    if not isinstance(s, str):
        raise KvarnArgumentError("expected a str, not %s" % type(s).__name__)
    return s.encode()


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


def mla_presets():
    lib = library()
    return [lib.kvarn_mla_preset_name(i).decode()
            for i in range(lib.kvarn_mla_preset_count())]


def mla_record_layout(preset="kvarn_mla_k4_g128", kv_lora_rank=512,
                      rope_dim=64):
    """The byte layout of an MLA layer's block record (MlaKernels' cache)."""
    out = MlaRecordLayout()
    _call("kvarn_mla_record_layout", _bytes(preset), kv_lora_rank, rope_dim,
          byref(out))
    return out


def mla_capacity_plan(kv_lora_rank, rope_dim, num_layers, budget_bytes,
                      concurrent_requests, pool_slots=-1,
                      preset="kvarn_mla_k4_g128"):
    """What a budget holds for MLA layers (kvarn_mla_capacity_plan: the plan
    of the MLA pool to come; nothing runs MLA yet)."""
    out = Capacity()
    _call("kvarn_mla_capacity_plan", _bytes(preset), kv_lora_rank, rope_dim,
          num_layers, budget_bytes, concurrent_requests, pool_slots,
          byref(out))
    return out


def can_compile():
    """True for libkvarn.so (the JIT), False for the runtime core
    libkvarn_runtime.so, which serves only kernels compiled ahead of time."""
    return bool(library().kvarn_can_compile())


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


def capacity_plan_layers(layers, head_dim, num_kv_heads, num_q_heads,
                         budget_bytes, concurrent_requests, pool_slots=-1,
                         preset="kvarn_k4v2_g128"):
    """capacity_plan for a pool of per-layer kinds (see Pool): the plan, with
    `layers` set to each layer's bytes at the planned size."""
    fn = "kvarn_capacity_plan_ex"
    n = len(layers)
    values = dict(num_layers=n, num_kv_heads=num_kv_heads,
                  num_q_heads=num_q_heads, head_dim=head_dim)
    for field, value in values.items():
        values[field] = _as_int("%s: config.%s" % (fn, field), value, c_int32)
    cfg = _PoolConfig(_bytes(preset), **values)
    opts, keep = _pool_options(fn, n, layers)
    out = Capacity()
    infos = (_LayerInfo * max(n, 1))()
    infos[0].struct_size = sizeof(_LayerInfo)
    _call(fn, byref(cfg), byref(opts) if opts else None, budget_bytes,
          concurrent_requests, pool_slots, byref(out), infos, n)
    out.layers = [_layer_dict(infos[i]) for i in range(n)]
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
               stream=None, window=0):
        """window: sliding window in tokens (0: none); the query attends its
        last `window` tokens."""
        _call("kvarn_decode_window", self._h, _stream(stream), *map(_ptr, (
            q, block_table, seq_lens, block_to_slot, cache, pool_k, pool_v,
            out)), softmax_scale, window, batch, max_blocks, num_kv_heads)

    def decode_split(self, q, block_table, seq_lens, block_to_slot, cache,
                     pool_k, pool_v, part_out, part_lse, out, softmax_scale,
                     batch, max_blocks, num_kv_heads, num_splits, stream=None,
                     window=0):
        _call("kvarn_decode_split_window", self._h, _stream(stream),
              *map(_ptr, (q, block_table, seq_lens, block_to_slot, cache,
                          pool_k, pool_v, part_out, part_lse, out)),
              softmax_scale, window, batch, max_blocks, num_kv_heads,
              num_splits)

    def decode_split_count(self, batch_capacity, max_blocks, num_kv_heads):
        """num_splits for decode_split in a deployment of up to
        batch_capacity requests of up to max_blocks blocks: fixed per
        deployment (CUDA graphs stay valid); 1 means use decode."""
        n = c_int32(0)
        _call("kvarn_decode_split_count", self._h, batch_capacity, max_blocks,
              num_kv_heads, byref(n))
        return n.value

    def verify(self, q, block_table, context_lens, query_lens, block_to_slot,
               cache, pool_k, pool_v, out, softmax_scale, batch,
               max_query_tokens, max_blocks, num_kv_heads, stream=None,
               window=0):
        _call("kvarn_verify_window", self._h, _stream(stream), *map(_ptr, (
            q, block_table, context_lens, query_lens, block_to_slot, cache,
            pool_k, pool_v, out)), softmax_scale, window, batch,
            max_query_tokens, max_blocks, num_kv_heads)

    def materialize(self, block_table, seq_lens, block_to_slot, cache, pool_k,
                    pool_v, out_start, out_k, out_v, batch, max_blocks,
                    num_kv_heads, stream=None):
        _call("kvarn_materialize", self._h, _stream(stream), *map(_ptr, (
            block_table, seq_lens, block_to_slot, cache, pool_k, pool_v,
            out_start, out_k, out_v)), batch, max_blocks, num_kv_heads)


class MlaKernels(_Handle):
    """The MLA kernels of one (MLA preset, kv_lora_rank, rope_dim, query
    heads, activation dtype) on caller buffers (docs/runtime.md, "MLA"):
    cache [num_blocks, record_bytes] u8, pool_latent [pool_slots, block,
    kv_lora_rank] (rotated) and pool_pe [pool_slots, block, rope_dim] fp16;
    q [batch, heads, kv_lora_rank + rope_dim] (the absorbed query), out
    [batch, heads, kv_lora_rank]."""
    _destroy = "kvarn_kernels_destroy"

    def __init__(self, context, kv_lora_rank=512, rope_dim=64, num_heads=16,
                 preset="kvarn_mla_k4_g128", dtype="f16"):
        super().__init__()
        self.context = context
        _call("kvarn_mla_kernels_create", context._h, _bytes(preset),
              kv_lora_rank, rope_dim, num_heads, _bytes(dtype),
              byref(self._h))

    def load(self, names=None):
        _call("kvarn_kernels_load", self._h, _bytes(names))

    def append(self, latent, k_pe, slot_mapping, block_to_slot, pool_latent,
               pool_pe, num_tokens, stream=None):
        _call("kvarn_mla_append", self._h, _stream(stream), *map(_ptr, (
            latent, k_pe, slot_mapping, block_to_slot, pool_latent, pool_pe)),
            num_tokens)

    def flush(self, pool_latent, pool_pe, tile_slots, tile_blocks, cache,
              num_tiles, stream=None):
        _call("kvarn_mla_flush", self._h, _stream(stream), *map(_ptr, (
            pool_latent, pool_pe, tile_slots, tile_blocks, cache)), num_tiles)

    def decode(self, q, block_table, seq_lens, block_to_slot, cache,
               pool_latent, pool_pe, out, softmax_scale, batch, max_blocks,
               stream=None):
        _call("kvarn_mla_decode", self._h, _stream(stream), *map(_ptr, (
            q, block_table, seq_lens, block_to_slot, cache, pool_latent,
            pool_pe, out)), softmax_scale, batch, max_blocks)

    def decode_split(self, q, block_table, seq_lens, block_to_slot, cache,
                     pool_latent, pool_pe, part_out, part_lse, out,
                     softmax_scale, batch, max_blocks, num_splits,
                     stream=None):
        _call("kvarn_mla_decode_split", self._h, _stream(stream),
              *map(_ptr, (q, block_table, seq_lens, block_to_slot, cache,
                          pool_latent, pool_pe, part_out, part_lse, out)),
              softmax_scale, batch, max_blocks, num_splits)

    def verify(self, q, block_table, context_lens, query_lens, block_to_slot,
               cache, pool_latent, pool_pe, out, softmax_scale, batch,
               max_query_tokens, max_blocks, stream=None):
        _call("kvarn_mla_verify", self._h, _stream(stream), *map(_ptr, (
            q, block_table, context_lens, query_lens, block_to_slot, cache,
            pool_latent, pool_pe, out)), softmax_scale, batch,
            max_query_tokens, max_blocks)

    def decode_split_count(self, batch_capacity, max_blocks):
        """num_splits for decode_split in a deployment of up to
        batch_capacity requests of up to max_blocks blocks; 1 means use
        decode."""
        n = c_int32(0)
        _call("kvarn_mla_decode_split_count", self._h, batch_capacity,
              max_blocks, byref(n))
        return n.value


def mla_decode_split_scratch_bytes(batch, num_heads, kv_lora_rank):
    """(part_out, part_lse) bytes of MlaKernels.decode_split's f32 scratch."""
    out, lse = c_int64(0), c_int64(0)
    _call("kvarn_mla_decode_split_scratch_bytes", batch, num_heads,
          kv_lora_rank, byref(out), byref(lse))
    return out.value, lse.value


def _array(ctype, what, xs):
    """A C array of `xs` (each checked: ctypes arrays wrap silently), and its
    length."""
    xs = [_as_int("%s[%d]" % (what, i), x, ctype) for i, x in enumerate(xs)]
    return (ctype * max(len(xs), 1))(*xs), len(xs)


def _i64s(what, xs):
    return _array(c_int64, what, xs)


def _i32s(what, xs):
    return _array(c_int32, what, xs)


class Pool(_Handle):
    """The managed pool (kvarn_pool_*). context=None: bookkeeping only."""
    _destroy = "kvarn_pool_destroy"

    def __init__(self, context, num_layers, num_kv_heads, num_q_heads,
                 head_dim, num_blocks, pool_slots, max_requests,
                 max_blocks_per_request, preset="kvarn_k4v2_g128",
                 block_size=0, layers=None):
        """layers: None (every layer kvarn with `preset`) or one entry per
        layer, a kind ("kvarn", "fp16", "absent") or a dict {"kind",
        "window" (tokens, 0: none), "preset" (kvarn layers)}; kvarn.h,
        kvarn_layer_config_t."""
        super().__init__()
        self.context = context
        values = dict(num_layers=num_layers, num_kv_heads=num_kv_heads,
                      num_q_heads=num_q_heads, head_dim=head_dim,
                      block_size=block_size, num_blocks=num_blocks,
                      pool_slots=pool_slots, max_requests=max_requests,
                      max_blocks_per_request=max_blocks_per_request)
        # The config's int32 fields would wrap silently.
        for field, value in values.items():
            values[field] = _as_int("kvarn_pool_create: config.%s" % field,
                                    value, c_int32)
        self.num_blocks = values["num_blocks"]
        self.num_layers = values["num_layers"]
        cfg = _PoolConfig(_bytes(preset), **values)
        opts, keep = _pool_options("kvarn_pool_create", self.num_layers,
                                   layers)
        _call("kvarn_pool_create_ex", context._h if context else None,
              byref(cfg), byref(opts) if opts else None, byref(self._h))

    @classmethod
    def mla(cls, context, num_layers, num_heads, kv_lora_rank, rope_dim,
            num_blocks, pool_slots, max_requests, max_blocks_per_request,
            preset="kvarn_mla_k4_g128"):
        """An MLA pool (kvarn_mla_pool_create): every layer one latent "KV
        head". Steps take the latents as write_kv's k and the rope keys as
        its v, the absorbed query [n, num_heads, kv_lora_rank + rope_dim]
        as decode's and verify's q; no sink block."""
        self = cls.__new__(cls)
        _Handle.__init__(self)
        self.context = context
        values = dict(num_layers=num_layers, num_kv_heads=1,
                      num_q_heads=num_heads, head_dim=kv_lora_rank,
                      block_size=0, num_blocks=num_blocks,
                      pool_slots=pool_slots, max_requests=max_requests,
                      max_blocks_per_request=max_blocks_per_request)
        for field, value in values.items():
            values[field] = _as_int("kvarn_mla_pool_create: config.%s" % field,
                                    value, c_int32)
        self.num_blocks = values["num_blocks"]
        self.num_layers = values["num_layers"]
        cfg = _PoolConfig(_bytes(preset), **values)
        _call("kvarn_mla_pool_create", context._h if context else None,
              byref(cfg), rope_dim, byref(self._h))
        return self

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
        """kvarn_pool_capacity, with `layers`: every layer's bytes
        (layer_info without the device pointers)."""
        out = Capacity()
        _call("kvarn_pool_capacity", self._h, byref(out))
        out.layers = [self.layer_info(l) for l in range(self.num_layers)]
        return out

    def layer_info(self, layer):
        out = _LayerInfo()
        out.struct_size = sizeof(_LayerInfo)
        _call("kvarn_pool_layer_info", self._h, layer, byref(out))
        return _layer_dict(out)

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
        self._requests = None  # of the open step: commit's accepted length
        _call("kvarn_step_create", pool._h, byref(self._h))

    def begin(self, ids, counts):
        ids, n = _i64s("kvarn_step_begin: ids", ids)
        counts, m = _i32s("kvarn_step_begin: counts", counts)
        if n != m:
            raise KvarnArgumentError("kvarn_step_begin: %d ids but %d counts"
                                     % (n, m))
        _call("kvarn_step_begin", self._h, n, ids, counts)
        self._requests = n

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
        """accepted: one count per request of begin() (the rest are rolled
        back), or None for every token. libkvarn reads as many counts as the
        step has requests, so the length is checked here."""
        if accepted is None:
            _call("kvarn_step_commit", self._h, None)
        else:
            arr, n = _i32s("kvarn_step_commit: accepted", accepted)
            if self._requests is not None and n != self._requests:
                raise KvarnArgumentError(
                    "kvarn_step_commit: %d accepted counts for a step of %d "
                    "requests" % (n, self._requests))
            if self._requests is None:
                arr = (c_int32 * 1)()  # not open: libkvarn reads nothing
            _call("kvarn_step_commit", self._h, arr)
        self._requests = None
