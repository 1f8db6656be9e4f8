"""kvarn: KVarN-quantized paged KV caches, over libkvarn.so's C API (ctypes).

No build step: the package finds libkvarn.so through $KVARN_LIBRARY, next to
this file, or the dynamic loader's path. Tensors (PyTorch or anything with
data_ptr()) pass as raw device pointers without copies; plain ints are taken
as device pointers too. Every failing call raises KvarnError (with .status,
the C status name, and the library's message); an argument that does not fit
its C type (an int out of int32_t, a list of the wrong length) raises
KvarnArgumentError, a KvarnError and a ValueError, before anything reaches
the library.

    import kvarn
    ctx = kvarn.Context(device=0, stream=torch.cuda.current_stream().cuda_stream)
    pool = kvarn.Pool(ctx, num_layers=32, num_kv_heads=8, num_q_heads=32,
                      head_dim=128, num_blocks=4096, pool_slots=160,
                      max_requests=64, max_blocks_per_request=256)
    pool.add_request(7)
    step = pool.step()
    step.begin([7], [len(prompt)])
    for layer in range(32):
        step.write_kv(layer, k[layer], v[layer])
    step.commit()
    pool.flush()
"""

from ._api import (  # noqa: F401
    KvarnArgumentError,
    KvarnError,
    Capacity,
    CacheShape,
    MlaRecordLayout,
    Context,
    Kernels,
    MlaKernels,
    Pool,
    RecordLayout,
    Step,
    LAYER_KINDS,
    capacity_plan,
    capacity_plan_layers,
    cache_shape,
    can_compile,
    cuda_available,
    library,
    mla_capacity_plan,
    mla_decode_split_scratch_bytes,
    mla_presets,
    mla_record_layout,
    presets,
    record_layout,
    version,
)
