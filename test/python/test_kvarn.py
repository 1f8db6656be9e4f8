"""The Python package over libkvarn.so, without a GPU and without PyTorch:
loading, presets, record layouts, sizes, errors as exceptions, and a
bookkeeping-only pool. Run: KVARN_LIBRARY=build/lib/libkvarn.so.0
PYTHONPATH=python python3 -m unittest test/python/test_kvarn.py"""

import os
import re
import subprocess
import sys
import types
import unittest

# Before the library loads the driver: this process must not find one, so
# the no-driver error is tested everywhere (the GPU test is test_kvarn_torch).
os.environ.setdefault("KVARN_LIBCUDA", "/nonexistent/kvarn-python-test/libcuda.so.1")

import kvarn  # noqa: E402


class PackageTest(unittest.TestCase):
    def test_version_and_presets(self):
        self.assertRegex(kvarn.version(), r"^\d+\.\d+\.\d+$")
        self.assertEqual(kvarn.presets()[0], "kvarn_k4v2_g128")
        self.assertEqual(len(kvarn.presets()), 8)
        self.assertIn("kvarn_k4v2_g128_e4m3", kvarn.presets())

    def test_record_layout_matches_the_spec(self):
        l = kvarn.record_layout("kvarn_k4v2_g128", 128)
        self.assertEqual((l.k_scale_offset, l.v_codes_offset, l.v_zero_offset,
                          l.record_bytes), (8192, 8960, 13568, 13824))
        self.assertEqual(kvarn.record_layout("kvarn_k4v2_g64", 128).record_bytes, 7296)
        self.assertEqual(kvarn.record_layout("kvarn_k4v4_g128", 128).record_bytes, 17920)

    def test_errors_are_exceptions(self):
        with self.assertRaises(kvarn.KvarnError) as e:
            kvarn.record_layout("kvarn_k9v9", 128)
        self.assertEqual(e.exception.status, "KVARN_ERROR_UNKNOWN_PRESET")
        self.assertIn("kvarn_k9v9", str(e.exception))
        with self.assertRaises(kvarn.KvarnError) as e:
            kvarn.record_layout("kvarn_k4v2_g128", 100)
        self.assertEqual(e.exception.status, "KVARN_ERROR_UNSUPPORTED_SHAPE")

    def test_no_driver_says_so(self):
        with self.assertRaises(kvarn.KvarnError) as e:
            kvarn.cuda_available()
        self.assertEqual(e.exception.status, "KVARN_ERROR_NO_DRIVER")
        with self.assertRaises(kvarn.KvarnError):
            kvarn.Context(0)

    def test_sizes_and_capacity(self):
        s = kvarn.cache_shape("kvarn_k4v2_g128", 128, 8, 1000, 16)
        self.assertEqual(s.cache_bytes, 1000 * 8 * 13824)
        self.assertEqual(s.pool_bytes, 16 * 128 * 8 * 128 * 2)
        c = kvarn.capacity_plan("kvarn_k4v2_g128", 128, 32, 8, 60 << 30, 64)
        self.assertGreaterEqual(c.ratio_vs_fp16, 4.5)
        self.assertEqual(c.tokens, c.num_blocks * 128)

    def test_bookkeeping_pool(self):
        pool = kvarn.Pool(None, num_layers=2, num_kv_heads=2, num_q_heads=4,
                          head_dim=64, num_blocks=16, pool_slots=6,
                          max_requests=4, max_blocks_per_request=8,
                          preset="kvarn_k4v2_g64")
        with self.assertRaises(kvarn.KvarnError) as e:
            kvarn.Pool(None, 2, 2, 4, 64, 16, 6, 4, 8, preset="kvarn_k4v2_g64",
                       block_size=128)
        self.assertEqual(e.exception.status, "KVARN_ERROR_UNSUPPORTED_SHAPE")
        pool.add_request(1)
        pool.add_request(2)
        step = pool.step()
        step.begin([1, 2], [130, 5])
        mapping = step.slot_mapping()
        blocks = pool.request_blocks(1)
        self.assertEqual(len(mapping), 135)
        self.assertEqual(mapping[129], blocks[2] * 64 + 1)
        with self.assertRaises(kvarn.KvarnError) as e:
            step.write_kv(0, 1, 1)
        self.assertIn("without a context", str(e.exception))
        step.commit()
        self.assertEqual(pool.flush(), 1)  # block 1 of request 1
        before = (pool.stats(), pool.block_to_slot())
        with self.assertRaises(kvarn.KvarnError) as e:
            step.begin([1, 2], [64 * 5, 1])  # more slots than are free
        self.assertEqual(e.exception.status, "KVARN_ERROR_POOL_EXHAUSTED")
        with self.assertRaises(kvarn.KvarnError) as e:
            pool.finish(7)
        self.assertEqual(e.exception.status, "KVARN_ERROR_UNKNOWN_REQUEST")
        self.assertEqual((pool.stats(), pool.block_to_slot()), before)
        pool.finish(1)
        pool.add_request(3)
        pool.share_prefix(3, 1, 128)
        self.assertEqual(pool.request_info(3)["length"], 128)
        for r in (1, 2, 3):
            pool.free(r)
        st = pool.stats()
        self.assertEqual((st["free_blocks"], st["free_slots"]), (16, 6))
        step.close()
        pool.close()

    def test_mixed_layer_pool(self):
        # Issue 17: kvarn layers of two presets, fp16 and absent ones.
        layers = ["kvarn", {"kind": "fp16", "window": 1024}, "absent",
                  {"kind": "kvarn", "preset": "kvarn_k4v4_g64"}]
        pool = kvarn.Pool(None, 4, 2, 4, 64, 16, 6, 4, 8,
                          preset="kvarn_k4v2_g64", layers=layers)
        rec = {p: kvarn.record_layout(p, 64).record_bytes
               for p in ("kvarn_k4v2_g64", "kvarn_k4v4_g64")}
        tile = 64 * 2 * 64 * 2  # one K (or V) tile of 64 tokens, fp16
        want = [(16 * 2 * rec["kvarn_k4v2_g64"], 2 * 6 * tile),
                (0, 2 * 16 * tile), (0, 0),
                (16 * 2 * rec["kvarn_k4v4_g64"], 2 * 6 * tile)]
        cap = pool.capacity()
        got = [(l["cache_bytes"], l["pool_bytes"]) for l in cap.layers]
        self.assertEqual(got, want)
        self.assertEqual([l["kind"] for l in cap.layers],
                         ["kvarn", "fp16", "absent", "kvarn"])
        self.assertEqual(cap.layers[1]["window"], 1024)
        self.assertEqual(cap.used_bytes, sum(c + p for c, p in want))
        self.assertEqual(cap.fp16_tokens, cap.used_bytes // (4 * 3 * 2 * 64))
        pool.add_request(1)
        step = pool.step()
        step.begin([1], [1])
        with self.assertRaises(kvarn.KvarnError) as e:
            step.decode(2, 1, 1, 1.0)
        self.assertIn("layer 2 is absent", str(e.exception))
        step.commit()
        step.close()
        pool.close()
        plan = kvarn.capacity_plan_layers(layers, 64, 2, 4, 1 << 30, 8,
                                          preset="kvarn_k4v2_g64")
        self.assertEqual(plan.used_bytes,
                         sum(l["total_bytes"] for l in plan.layers))
        self.assertEqual(plan.layers[1]["pool_bytes"],
                         2 * plan.num_blocks * tile)
        for bad, status in (
                (["kvarn", "nope", "absent", "kvarn"],
                 "KVARN_ERROR_INVALID_ARGUMENT"),
                (["absent"] * 4, "KVARN_ERROR_INVALID_ARGUMENT"),
                (["kvarn", {"kind": "kvarn", "preset": "kvarn_k4v2_g128"},
                  "absent", "fp16"], "KVARN_ERROR_UNSUPPORTED_SHAPE"),
                (["kvarn"] * 3, "KVARN_ERROR_INVALID_ARGUMENT")):
            with self.assertRaises(kvarn.KvarnError) as e:
                kvarn.Pool(None, 4, 2, 4, 64, 16, 6, 4, 8,
                           preset="kvarn_k4v2_g64", layers=bad)
            self.assertEqual(e.exception.status, status, bad)

    def test_mla_record_layout_matches_the_spec(self):
        self.assertEqual(kvarn.mla_presets(), ["kvarn_mla_k4_g128"])
        l = kvarn.mla_record_layout("kvarn_mla_k4_g128", 512, 64)
        # docs/kvarn.md, "MLA records": 32768 code bytes, scale and zero
        # fp16 [512], token scale fp16 [128], rope fp16 [128][64].
        self.assertEqual((l.codes_offset, l.scale_offset, l.zero_offset,
                          l.token_scale_offset, l.rope_offset,
                          l.record_bytes),
                         (0, 32768, 33792, 34816, 35072, 51456))
        self.assertEqual((l.group, l.bits, l.sinkhorn_iters), (128, 4, 16))
        with self.assertRaises(kvarn.KvarnError) as e:
            kvarn.mla_record_layout("kvarn_mla_k4_g128", 300, 64)
        self.assertEqual(e.exception.status, "KVARN_ERROR_UNSUPPORTED_SHAPE")
        with self.assertRaises(kvarn.KvarnError) as e:
            kvarn.mla_record_layout("kvarn_k4v2_g128", 512, 64)
        self.assertEqual(e.exception.status, "KVARN_ERROR_UNKNOWN_PRESET")

    def test_mla_capacity_plan(self):
        # DeepSeek-V2-Lite's latent over 27 layers, 10 GB, 16 requests.
        c = kvarn.mla_capacity_plan(512, 64, 27, 10 * 10**9, 16)
        self.assertEqual(c.pool_slots, 18)
        self.assertEqual(c.record_bytes_per_token, 402.0)
        self.assertEqual(c.fp16_tokens, 10 * 10**9 // (27 * 1152))
        self.assertGreater(c.ratio_vs_fp16, 2.8)
        self.assertLess(c.ratio_vs_fp16, 1152 / 402)
        with self.assertRaises(kvarn.KvarnError) as e:
            kvarn.mla_capacity_plan(512, 64, 27, 1 << 20, 16)
        self.assertEqual(e.exception.status, "KVARN_ERROR_OUT_OF_MEMORY")

    def test_mla_kernels_refuse_bad_shapes_without_a_gpu(self):
        out, lse = kvarn.mla_decode_split_scratch_bytes(2, 16, 512)
        self.assertEqual((out, lse), (2 * 64 * 16 * 512 * 4, 2 * 64 * 16 * 4))

        class NoContext:
            _h = None
        for kwargs, status in [
                (dict(kv_lora_rank=384), "KVARN_ERROR_UNSUPPORTED_SHAPE"),
                (dict(rope_dim=0), "KVARN_ERROR_UNSUPPORTED_SHAPE"),
                (dict(num_heads=129), "KVARN_ERROR_UNSUPPORTED_SHAPE"),
                (dict(preset="kvarn_k4v2_g128"), "KVARN_ERROR_UNKNOWN_PRESET"),
                (dict(dtype="f8"), "KVARN_ERROR_INVALID_ARGUMENT")]:
            with self.assertRaises(kvarn.KvarnError) as e:
                kvarn.MlaKernels(NoContext(), **kwargs)
            self.assertEqual(e.exception.status, status, kwargs)
        with self.assertRaises(kvarn.KvarnArgumentError):
            kvarn.MlaKernels(NoContext(), num_heads=1 << 40)

    def test_mla_pool_flushes_every_full_block(self):
        pool = kvarn.Pool.mla(None, num_layers=2, num_heads=16,
                              kv_lora_rank=512, rope_dim=64, num_blocks=8,
                              pool_slots=3, max_requests=2,
                              max_blocks_per_request=4)
        c = pool.capacity()
        self.assertEqual(c.record_bytes_per_token, 402.0)
        self.assertEqual(pool.layer_info(1)["record_bytes"], 51456)
        pool.add_request(1)
        step = pool.step()
        step.begin([1], [128 + 3])
        step.commit()
        self.assertEqual(pool.flush(), 1)  # no sink block held back
        with self.assertRaises(kvarn.KvarnError) as e:
            kvarn.Pool.mla(None, 2, 16, 512, 0, 8, 3, 2, 4)
        self.assertEqual(e.exception.status, "KVARN_ERROR_UNSUPPORTED_SHAPE")

    def test_can_compile_says_which_library_this_is(self):
        expected = os.environ.get("KVARN_EXPECT_CAN_COMPILE")
        if expected is None:
            self.skipTest("KVARN_EXPECT_CAN_COMPILE not set (ctest sets it)")
        self.assertEqual(kvarn.can_compile(), expected == "1")

    def test_parameters_match_the_header(self):
        # The names in argument errors and the arity of every signature.
        header = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                              "..", "..", "include", "kvarn", "kvarn.h")
        if not os.path.exists(header):
            self.skipTest("no kvarn.h beside this test")
        with open(header) as f:
            text = re.sub(r"/\*.*?\*/", "", f.read(), flags=re.S)
        declared = {}
        for m in re.finditer(r"KVARN_API\s+[\w\s*]+?\b(kvarn_\w+)\s*\(([^)]*)\)",
                             text):
            params = m.group(2).strip()
            declared[m.group(1)] = [] if params in ("", "void") else [
                re.search(r"(\w+)\s*$", p).group(1) for p in params.split(",")]
        from kvarn import _api
        self.assertEqual(set(_api._SIGNATURES), set(declared))
        for name, params in declared.items():
            self.assertEqual(_api._PARAMS[name].split(), params, name)
            self.assertEqual(len(_api._SIGNATURES[name]), len(params), name)

    def test_arguments_are_checked_before_they_reach_c(self):
        # ctypes wraps ints silently: this was the 128 layout.
        with self.assertRaises(kvarn.KvarnArgumentError) as e:
            kvarn.record_layout("kvarn_k4v2_g128", 2**32 + 128)
        self.assertEqual(e.exception.status, "KVARN_ERROR_INVALID_ARGUMENT")
        self.assertIsInstance(e.exception, kvarn.KvarnError)
        self.assertIsInstance(e.exception, ValueError)
        self.assertIn("kvarn_record_layout: head_dim = 4294967424 does not fit "
                      "in int32_t", str(e.exception))
        bad = [
            (lambda: kvarn.record_layout("kvarn_k4v2_g128", -2**31 - 1),
             "head_dim = -2147483649"),
            (lambda: kvarn.record_layout("kvarn_k4v2_g128", 128.0),
             "head_dim must be an integer, not float"),
            (lambda: kvarn.record_layout("kvarn_k4v2_g128", True),
             "head_dim must be an integer, not a bool"),
            # ctypes cuts a string at a NUL: this was kvarn_k4v2_g128.
            (lambda: kvarn.record_layout("kvarn_k4v2_g128\0junk", 128),
             "preset must be a str without NUL"),
            (lambda: kvarn.record_layout(b"kvarn_k4v2_g128", 128),
             "expected a str, not bytes"),
            (lambda: kvarn.cache_shape("kvarn_k4v2_g128", 128, 8, 2**63, 1),
             "num_blocks = 9223372036854775808 does not fit in int64_t"),
            (lambda: kvarn.capacity_plan("kvarn_k4v2_g128", 128, 2**31, 8,
                                         1 << 30, 4),
             "num_layers = 2147483648"),
            (lambda: kvarn.Pool(None, 2, 2, 4, 64, 2**32 + 16, 6, 4, 8,
                                preset="kvarn_k4v2_g64"),
             "config.num_blocks = 4294967312"),
            (lambda: kvarn.Context(0, stream=-1), "stream = -1"),
            # Checked before the (here absent) kernels handle is needed.
            (lambda: kvarn.Kernels.decode_split_count(
                types.SimpleNamespace(_h=None), 2**31, 256, 8),
             "kvarn_decode_split_count: batch_capacity = 2147483648"),
        ]
        for call, message in bad:
            with self.assertRaises(kvarn.KvarnArgumentError) as e:
                call()
            self.assertIn(message, str(e.exception))

    def test_commit_checks_the_accepted_counts(self):
        pool = kvarn.Pool(None, num_layers=1, num_kv_heads=1, num_q_heads=1,
                          head_dim=64, num_blocks=8, pool_slots=4,
                          max_requests=4, max_blocks_per_request=4,
                          preset="kvarn_k4v2_g64")
        pool.add_request(1)
        pool.add_request(2)
        step = pool.step()
        step.begin([1, 2], [3, 3])
        before = (pool.stats(), pool.request_info(1), pool.request_info(2))
        # libkvarn reads one count per request: a short list was read past
        # its end (requests silently rolled back).
        for accepted, message in (([3], "1 accepted counts for a step of 2"),
                                  ([3, 3, 3], "3 accepted counts"),
                                  ([3, 2**32 + 1], "accepted[1] = 4294967297")):
            with self.assertRaises(kvarn.KvarnArgumentError) as e:
                step.commit(accepted)
            self.assertIn(message, str(e.exception))
            self.assertEqual((pool.stats(), pool.request_info(1),
                              pool.request_info(2)), before)
        with self.assertRaises(kvarn.KvarnArgumentError):
            step.begin([1, 2], [1])
        step.commit([3, 1])
        self.assertEqual(pool.request_info(2)["length"], 1)
        # Not open: libkvarn says so whatever the list is.
        with self.assertRaises(kvarn.KvarnError) as e:
            step.commit([1, 2, 3])
        self.assertIn("not open", str(e.exception))
        step.close()
        pool.close()

    def test_core_does_not_need_torch(self):
        # kvarn.torch / kvarn.hf import torch and transformers; the ctypes
        # core must not, so `import kvarn` works where they are missing.
        code = ("import sys, kvarn; "
                "bad = [m for m in ('torch', 'transformers', 'kvarn.torch', "
                "'kvarn.hf') if m in sys.modules]; "
                "print(bad); sys.exit(1 if bad else 0)")
        env = dict(os.environ)
        r = subprocess.run([sys.executable, "-c", code], env=env,
                           capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        try:
            import torch  # noqa: F401
        except ImportError:
            # Without torch, the torch layer says what is missing.
            with self.assertRaises(ImportError) as e:
                import kvarn.torch  # noqa: F401
            self.assertIn("torch", str(e.exception))


if __name__ == "__main__":
    unittest.main()
