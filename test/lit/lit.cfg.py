# -*- Python -*-
import os

import lit.formats
from lit.llvm import llvm_config

config.name = "kvarn"
config.test_format = lit.formats.ShTest(not llvm_config.use_lit_shell)
config.suffixes = [".mlir", ".kvt", ".test"]
config.test_source_root = os.path.dirname(__file__)
config.test_exec_root = os.path.join(config.kvarn_obj_root, "test", "lit")
config.excludes = ["CMakeLists.txt", "lit.cfg.py", "lit.site.cfg.py", "Inputs"]

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

# %readonly DIR CMD...: CMD with DIR read-only (chmod, or as root a read-only
# bind mount). Tests that need it require the feature, present where a write
# under such a DIR really fails.
import subprocess
import tempfile
_readonly = os.path.join(config.test_source_root, "jit", "Inputs", "readonly.sh")
config.substitutions.append(("%readonly", "bash " + _readonly))
with tempfile.TemporaryDirectory() as _probe:
    _works = subprocess.run(["bash", _readonly, _probe, "true"],
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL).returncode == 0
    _blocks = subprocess.run(["bash", _readonly, _probe, "touch",
                              os.path.join(_probe, "x")],
                             stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL).returncode != 0
    if _works and _blocks:
        config.available_features.add("readonly-dir")
