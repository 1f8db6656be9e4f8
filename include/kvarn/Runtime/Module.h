//===- Module.h - loaded modules, kernels and launches ----------*- C++ -*-===//
//
// A kernel comes from the compiler as PTX (and, where it was assembled, a
// cubin), a name, a warp count and a dynamic shared memory size: KernelImage.
// LoadedKernel turns that into something launchable; Module, Kernel,
// KernelArgs and launch() are the pieces underneath for callers that need
// them one by one.
//
// Kernel parameters follow Triton's convention: the signature's raw global
// pointers and scalars in order, then two trailing global pointers (global
// scratch, profile scratch), null when the kernel uses none.
//
//===----------------------------------------------------------------------===//
#ifndef KVARN_RUNTIME_MODULE_H
#define KVARN_RUNTIME_MODULE_H

#include "kvarn/Codegen/Pipeline.h"
#include "kvarn/Runtime/Memory.h"

#include "kvarn/Support/Span.h"
#include <string_view>
#include <vector>

#include <cstdint>
#include <cstring>
#include <string>

namespace kvarn::cuda {

/// Static shared memory a block may use without opting in, on every chip.
constexpr int kDefaultSharedBytesPerBlock = 48 * 1024;

/// What the driver reports about a loaded kernel (cuFuncGetAttribute).
struct KernelAttributes {
  int registers = 0;
  int staticSharedBytes = 0;
  int localBytes = 0;            // per thread; > 0 means local memory (spills, arrays)
  int maxThreadsPerBlock = 0;
  int maxDynamicSharedBytes = 0; // the current opt-in limit for launches
  int ptxVersion = 0;            // 10 * major + minor of the PTX it came from
  int binaryVersion = 0;         // 10 * major + minor of the SASS
};

/// A kernel of a loaded Module: valid while that Module lives.
struct Kernel {
  CUfunction function = nullptr;
  std::string name;
  KernelAttributes attributes;
};

/// A loaded module (cuModuleLoadData*), unloaded in the destructor.
class Module {
public:
  /// Loads PTX through the driver's JIT for the context's GPU; a rejected PTX
  /// fails with KVARN_ERROR_COMPILE and the JIT's error log.
  static kvarn::Expected<Module> loadPtx(const Context &context,
                                         std::string_view ptx);
  /// Loads a cubin (or fatbin) image.
  static kvarn::Expected<Module> loadCubin(const Context &context,
                                           std::string_view image);

  Module() = default;
  Module(Module &&other) noexcept { *this = std::move(other); }
  Module &operator=(Module &&other) noexcept;
  ~Module();

  CUmodule handle() const { return module; }

  /// The kernel called `name`. When `dynamicSharedBytes` is more than the
  /// driver allows by default (48 KiB less static shared memory), raises the
  /// kernel's limit (CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES), or
  /// fails if the GPU has less.
  kvarn::Expected<Kernel> getKernel(std::string_view name,
                                    int dynamicSharedBytes = 0) const;

private:
  ContextRef ctx;
  DeviceInfo device; // for the shared memory limit and messages
  CUmodule module = nullptr;
};

/// Kernel parameters in launch order; each value is copied in, so temporaries
/// are fine. data() is what cuLaunchKernel takes.
class KernelArgs {
public:
  /// What a slot holds, for the check against the kernel's ABI at launch.
  enum class Kind { Pointer, I32, I64, F32 };

  KernelArgs &pointer(CUdeviceptr address) {
    return add(uint64_t(address), Kind::Pointer);
  }
  KernelArgs &pointer(const DeviceBuffer &buffer) {
    return pointer(buffer.address());
  }
  KernelArgs &i32(int32_t value) { return addBits(value, Kind::I32); }
  KernelArgs &u32(uint32_t value) { return addBits(value, Kind::I32); }
  KernelArgs &i64(int64_t value) { return addBits(value, Kind::I64); }
  KernelArgs &f32(float value) { return addBits(value, Kind::F32); }
  /// A slot of `kind` holding `bits` (a NamedArg's).
  KernelArgs &raw(Kind kind, uint64_t bits) {
    switch (kind) {
    case Kind::Pointer:
      return pointer(CUdeviceptr(bits));
    case Kind::I32:
      return i32(int32_t(uint32_t(bits)));
    case Kind::I64:
      return i64(int64_t(bits));
    case Kind::F32: {
      float f;
      uint32_t b = uint32_t(bits);
      std::memcpy(&f, &b, sizeof f);
      return f32(f);
    }
    }
    return *this;
  }
  /// The two trailing pointers every kvarn (and Triton) kernel takes.
  KernelArgs &scratch(CUdeviceptr globalScratch = 0,
                      CUdeviceptr profileScratch = 0) {
    return pointer(globalScratch).pointer(profileScratch);
  }

  size_t size() const { return slots.size(); }
  Kind kind(size_t i) const { return kinds[i]; }
  /// Slot i's integer (an I32 or I64 slot), sign-extended.
  int64_t integer(size_t i) const {
    return kinds[i] == Kind::I32 ? int64_t(int32_t(uint32_t(slots[i])))
                                 : int64_t(slots[i]);
  }
  /// Pointers to each value; valid until the next value is added.
  void **data();

private:
  template <typename T> KernelArgs &addBits(T value, Kind kind) {
    static_assert(sizeof(T) <= sizeof(uint64_t));
    uint64_t slot = 0;
    std::memcpy(&slot, &value, sizeof(T)); // the driver reads sizeof(T) bytes
    return add(slot, kind);
  }
  KernelArgs &add(uint64_t slot, Kind kind) {
    slots.push_back(slot);
    kinds.push_back(kind);
    return *this;
  }

  std::vector<uint64_t> slots;
  std::vector<Kind> kinds;
  std::vector<void *> addresses;
};

/// Checks `args` against the ABI of kernel `name`: one argument per
/// parameter, of its kind (a pointer for `*T`, i32, i64, f32), then the two
/// scratch pointers. KVARN_ERROR_INVALID_ARGUMENT naming the first that
/// differs; nothing to check for an empty ABI (an image made without one).
kvarn::Error checkArguments(std::string_view name, const KernelAbi &abi,
                            const KernelArgs &args);

/// One argument of a kernel by its parameter's name in the .kvt signature:
/// what bindArguments puts in the ABI's order.
struct NamedArg {
  const char *name;
  KernelArgs::Kind kind;
  uint64_t bits;
  NamedArg(const char *name, CUdeviceptr pointer)
      : name(name), kind(KernelArgs::Kind::Pointer), bits(pointer) {}
  NamedArg(const char *name, int32_t value)
      : name(name), kind(KernelArgs::Kind::I32),
        bits(uint64_t(uint32_t(value))) {}
  NamedArg(const char *name, float value)
      : name(name), kind(KernelArgs::Kind::F32), bits(0) {
    std::memcpy(&bits, &value, sizeof value);
  }
};

/// `named` as kernel `name`'s argument list: one per parameter of `abi`, in
/// its order, then the two scratch pointers (null). KVARN_ERROR_INVALID_
/// ARGUMENT naming a parameter no argument gives, an argument no parameter
/// takes (or given twice), or one whose kind is not the parameter's; an
/// empty ABI (an image made without one) cannot be bound.
kvarn::Expected<KernelArgs> bindArguments(std::string_view name,
                                          const KernelAbi &abi,
                                          Span<const NamedArg> named);

struct Grid {
  unsigned x = 1, y = 1, z = 1;
  bool empty() const { return x == 0 || y == 0 || z == 0; }
};

/// The grid of programs kernel `name` declares (`grid(...)` in its .kvt, the
/// ABI's rule) for these arguments, which checkArguments accepted: each axis
/// the integer argument it names, or its constant. A negative extent or one
/// past 2^31 - 1 is KVARN_ERROR_INVALID_ARGUMENT naming the parameter; an
/// empty ABI (an image made without one) is too: the grid is unknown.
kvarn::Expected<Grid> gridOf(std::string_view name, const KernelAbi &abi,
                             const KernelArgs &args);

/// How to launch: a 1-D block of 32 * numWarps threads, as Triton does.
struct LaunchConfig {
  Grid grid;
  int numWarps = 4;
  int dynamicSharedBytes = 0;
  CUstream stream = nullptr;  // null: the legacy default stream
  /// A programmatic dependent launch (cuLaunchKernelEx with programmatic
  /// stream serialization): the kernel may start before the one before it
  /// on the stream ends; it must wait for it (griddepcontrol.wait) before
  /// reading its results. Plain where the driver lacks cuLaunchKernelEx.
  bool programmaticDependent = false;
};

/// Checks `config` against what `kernel` allows, before the driver does, so
/// the message says which limit was exceeded.
kvarn::Error checkLaunchConfig(const Kernel &kernel,
                               const LaunchConfig &config);

/// cuLaunchKernelEx: enqueues and returns; errors from the kernel's execution
/// surface at the next synchronization.
kvarn::Error launch(ContextRef context, const Kernel &kernel,
                    const LaunchConfig &config, KernelArgs &args);

/// What the compiler hands the runtime for one kernel.
struct KernelImage {
  std::string name;       // the entry function
  std::string ptx;
  std::string cubin;      // empty: the driver JITs the PTX
  int numWarps = 4;
  int sharedBytes = 0;    // dynamic shared memory per block
  /// Grid points along x one CTA runs (the code generator packs short
  /// programs): a launch of grid.x points has ceil(grid.x / P) CTAs.
  int programsPerCta = 1;
  /// CTAs per SM the kernel's registers and shared memory were budgeted for
  /// (the metadata's ctas_per_sm): how many of its CTAs make a wave.
  int ctasPerSM = 1;
  /// Launched as a programmatic dependent of the kernel before it on the
  /// stream (the metadata's launch_pdl): it may start while that kernel
  /// runs, and waits for it (griddepcontrol.wait) before reading its output.
  bool launchPdl = false;
  /// The parameters and grid rule (the compiler's); every launch's
  /// arguments are checked against it.
  KernelAbi abi;
};

/// A KernelImage loaded into a context, ready to launch with its own warp
/// count and shared memory size.
class LoadedKernel {
public:
  /// Loads the cubin if there is one, else the PTX, and finds the kernel.
  static kvarn::Expected<LoadedKernel> load(const Context &context,
                                            const KernelImage &image);

  const Kernel &kernel() const { return function; }
  int numWarps() const { return warps; }
  int sharedBytes() const { return shared; }
  int programsPerCta() const { return programs; }
  int ctasPerSM() const { return ctasPerMultiprocessor; }
  bool launchPdl() const { return programmaticDependent; }
  const KernelAbi &abi() const { return signature; }

  /// Launches the kernel's grid of programs (`grid`, as the kernel declares
  /// it): ceil(grid.x / programsPerCta()) CTAs along x, after checking
  /// `args` against the ABI (checkArguments).
  kvarn::Error launch(Grid grid, KernelArgs &args, CUstream stream) const;
  /// Launches the grid the kernel declares for `args` (gridOf); an empty
  /// grid (an extent of 0) launches nothing.
  kvarn::Error launch(KernelArgs &args, CUstream stream) const;

private:
  ContextRef ctx;
  Module module;
  Kernel function;
  int warps = 0;
  int shared = 0;
  int programs = 1;
  int ctasPerMultiprocessor = 1;
  bool programmaticDependent = false;
  KernelAbi signature;
};

} // namespace kvarn::cuda

#endif // KVARN_RUNTIME_MODULE_H
