"""The Python package over libkvarn.so, without a GPU and without PyTorch:
loading, presets, record layouts, sizes, errors as exceptions, and a
bookkeeping-only pool. Run: KVARN_LIBRARY=build/lib/libkvarn.so.0
PYTHONPATH=python python3 -m unittest test/python/test_kvarn.py"""

import os
import unittest

# Before the library loads the driver: this process must not find one, so
# the no-driver error is tested everywhere (the GPU test is test_kvarn_torch).
os.environ.setdefault("KVARN_LIBCUDA", "/nonexistent/kvarn-python-test/libcuda.so.1")

import kvarn  # noqa: E402


class PackageTest(unittest.TestCase):
    def test_version_and_presets(self):
        self.assertRegex(kvarn.version(), r"^\d+\.\d+\.\d+$")
        self.assertEqual(kvarn.presets()[0], "kvarn_k4v2_g128")
        self.assertEqual(len(kvarn.presets()), 4)

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


if __name__ == "__main__":
    unittest.main()
