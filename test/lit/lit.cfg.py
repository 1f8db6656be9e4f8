# -*- Python -*-
import os

import lit.formats
from lit.llvm import llvm_config

config.name = "kvarn"
config.test_format = lit.formats.ShTest(not llvm_config.use_lit_shell)
config.suffixes = [".mlir", ".kvt", ".test"]
config.test_source_root = os.path.dirname(__file__)
config.test_exec_root = os.path.join(config.kvarn_obj_root, "test", "lit")
config.excludes = ["CMakeLists.txt", "lit.cfg.py", "lit.site.cfg.py"]

config.substitutions.append(("%golden", config.kvarn_golden_dir))
config.substitutions.append(
    ("%libkvarn", os.path.join(config.kvarn_lib_dir, "libkvarn.so")))

llvm_config.with_system_environment(["HOME", "TMPDIR"])
# kvarn-jit's default mode fills the kernel cache: keep tests out of ~/.cache.
config.environment["KVARN_CACHE_DIR"] = os.path.join(
    config.kvarn_obj_root, "test", "lit", "kvarn-cache")
llvm_config.use_default_substitutions()
llvm_config.with_environment("PATH", config.kvarn_tools_dir, append_path=True)
llvm_config.with_environment("PATH", config.llvm_tools_dir, append_path=True)
