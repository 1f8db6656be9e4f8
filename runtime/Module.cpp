//===- Module.cpp - loaded modules, kernels and launches ------------------===//

#include "kvarn/Runtime/Module.h"

#include "Internal.h"
#include "kvarn/Codegen/LaunchPolicy.h"

#include <algorithm>
#include <cstdlib>
#include <limits>
#include <string_view>
#include <utility>
#include <vector>

using namespace kvarn;
using namespace kvarn::cuda;

//===----------------------------------------------------------------------===//
// Module
//===----------------------------------------------------------------------===//

kvarn::Expected<Module> Module::loadPtx(const Context &context,
                                        std::string_view ptx) {
  KVARN_ENTER_CONTEXT(context);
  JitLogs logs(/*verbose=*/false);
  std::string text = std::string(ptx); // the driver reads up to the NUL
  Module m;
  m.ctx = context.ref();
  m.device = context.info();
  if (kvarn::Error err = KVARN_CUDA_CHECK(
          context.driver(), cuModuleLoadDataEx, &m.module, text.c_str(),
          logs.count(), logs.optionArray(), logs.valueArray()))
    return withContext(std::move(err), "JIT for " + context.info().arch() +
                                           logs.forMessage());
  return std::move(m);
}

kvarn::Expected<Module> Module::loadCubin(const Context &context,
                                          std::string_view image) {
  if (image.empty())
    return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                     "Module::loadCubin: the image is empty");
  KVARN_ENTER_CONTEXT(context);
  Module m;
  m.ctx = context.ref();
  m.device = context.info();
  if (kvarn::Error err = KVARN_CUDA_CHECK(context.driver(), cuModuleLoadData,
                                          &m.module, image.data()))
    return withContext(std::move(err), "a " + std::to_string(image.size()) +
                                           "-byte image on " +
                                           context.info().arch());
  return std::move(m);
}

Module &Module::operator=(Module &&other) noexcept {
  std::swap(ctx, other.ctx);
  std::swap(device, other.device);
  std::swap(module, other.module);
  return *this;
}

Module::~Module() {
  if (!module)
    return;
  releaseInContext(ctx, ctx.driver().api().cuModuleUnload, module);
  module = nullptr;
}

kvarn::Expected<Kernel> Module::getKernel(std::string_view name,
                                          int dynamicSharedBytes) const {
  const Driver &driver = ctx.driver();
  KVARN_ENTER_CONTEXT(ctx);
  Kernel kernel;
  kernel.name = std::string(name);
  if (kvarn::Error err =
          KVARN_CUDA_CHECK(driver, cuModuleGetFunction, &kernel.function,
                           module, kernel.name.c_str()))
    return withContext(std::move(err), "kernel '" + kernel.name + "'");

  auto readAttributes = [&]() -> kvarn::Error {
    KernelAttributes &a = kernel.attributes;
    struct {
      CUfunction_attribute attribute;
      int *field;
    } fields[] = {
        {CU_FUNC_ATTRIBUTE_NUM_REGS, &a.registers},
        {CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES, &a.staticSharedBytes},
        {CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES, &a.localBytes},
        {CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK, &a.maxThreadsPerBlock},
        {CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
         &a.maxDynamicSharedBytes},
        {CU_FUNC_ATTRIBUTE_PTX_VERSION, &a.ptxVersion},
        {CU_FUNC_ATTRIBUTE_BINARY_VERSION, &a.binaryVersion},
    };
    for (auto &[attribute, field] : fields)
      if (kvarn::Error err = KVARN_CUDA_CHECK(driver, cuFuncGetAttribute, field,
                                              attribute, kernel.function))
        return withContext(std::move(err), "kernel '" + kernel.name + "'");
    return kvarn::Error::success();
  };
  if (kvarn::Error err = readAttributes())
    return std::move(err);

  if (dynamicSharedBytes > kernel.attributes.maxDynamicSharedBytes) {
    int available = device.maxSharedBytesPerBlockOptin -
                    kernel.attributes.staticSharedBytes;
    if (dynamicSharedBytes > available)
      return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                       "kernel '{0}' asks for {1} bytes of dynamic shared "
                       "memory; {2} ({3}) allows {4} per block, less {5} "
                       "static",
                       kernel.name, dynamicSharedBytes, device.name,
                       device.arch(),
                       device.maxSharedBytesPerBlockOptin,
                       kernel.attributes.staticSharedBytes);
    if (kvarn::Error err =
            KVARN_CUDA_CHECK(driver, cuFuncSetAttribute, kernel.function,
                             CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                             dynamicSharedBytes))
      return withContext(std::move(err), "kernel '" + kernel.name + "'");
    kernel.attributes.maxDynamicSharedBytes = dynamicSharedBytes;
    // Split the SM's unified L1/shared memory all to shared, so as many CTAs
    // as their shared memory allows fit at once (the default split can hold
    // one 79 KiB CTA where two fit). A hint: the driver may round it.
    if (kvarn::Error err =
            KVARN_CUDA_CHECK(driver, cuFuncSetAttribute, kernel.function,
                             CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT,
                             int(CU_SHAREDMEM_CARVEOUT_MAX_SHARED)))
      return withContext(std::move(err), "kernel '" + kernel.name + "'");
  }
  return std::move(kernel);
}

//===----------------------------------------------------------------------===//
// Launches
//===----------------------------------------------------------------------===//

void **KernelArgs::data() {
  addresses.clear();
  for (uint64_t &slot : slots)
    addresses.push_back(&slot);
  return addresses.data();
}

kvarn::Error cuda::checkLaunchConfig(const Kernel &kernel,
                                     const LaunchConfig &config) {
  const Grid &g = config.grid;
  if (g.x == 0 || g.y == 0 || g.z == 0)
    return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                     "kernel '{0}': empty grid ({1}, {2}, {3})", kernel.name,
                     g.x, g.y, g.z);
  if (g.y > 65535 || g.z > 65535)
    return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                     "kernel '{0}': grid ({1}, {2}, {3}) exceeds 65535 in y or "
                     "z",
                     kernel.name, g.x, g.y, g.z);
  int threads = 32 * config.numWarps;
  if (config.numWarps <= 0 || threads > kernel.attributes.maxThreadsPerBlock)
    return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                     "kernel '{0}': {1} warps ({2} threads) per block; it "
                     "allows at most {3} threads",
                     kernel.name, config.numWarps, threads,
                     kernel.attributes.maxThreadsPerBlock);
  if (config.dynamicSharedBytes < 0 ||
      config.dynamicSharedBytes > kernel.attributes.maxDynamicSharedBytes)
    return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                     "kernel '{0}': {1} bytes of dynamic shared memory; it "
                     "allows {2} (load it with Module::getKernel(name, "
                     "bytes) to raise the limit)",
                     kernel.name, config.dynamicSharedBytes,
                     kernel.attributes.maxDynamicSharedBytes);
  return kvarn::Error::success();
}

/// $KVARN_NO_PDL (set, not "0"): every launch plain, for profilers and
/// drivers that mishandle programmatic dependent launches, and to measure
/// what they save.
static bool programmaticLaunchesOff() {
  static const bool off = [] {
    const char *v = std::getenv("KVARN_NO_PDL");
    return v && *v && std::string_view(v) != "0";
  }();
  return off;
}

kvarn::Error cuda::launch(ContextRef context, const Kernel &kernel,
                          const LaunchConfig &config, KernelArgs &args) {
  if (kvarn::Error err = checkLaunchConfig(kernel, config))
    return err;
  KVARN_ENTER_CONTEXT(context);
  const Grid &g = config.grid;
  CUlaunchConfig ex = {};
  ex.gridDimX = g.x;
  ex.gridDimY = g.y;
  ex.gridDimZ = g.z;
  ex.blockDimX = unsigned(32 * config.numWarps);
  ex.blockDimY = ex.blockDimZ = 1;
  ex.sharedMemBytes = unsigned(config.dynamicSharedBytes);
  ex.hStream = config.stream;
  // The kernel may start while the one before it on the stream runs; its
  // griddepcontrol.wait holds it until that kernel is done.
  CUlaunchAttribute dependent = {};
  dependent.id = CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION;
  dependent.value.programmaticStreamSerializationAllowed = 1;
  if (config.programmaticDependent && !programmaticLaunchesOff()) {
    ex.attrs = &dependent;
    ex.numAttrs = 1;
  }
  if (kvarn::Error err =
          KVARN_CUDA_CHECK(context.driver(), cuLaunchKernelEx, &ex,
                           kernel.function, args.data(), nullptr))
    return withContext(std::move(err),
                       format("kernel '{0}', grid ({1}, {2}, {3}), {4} "
                              "warps, {5} B shared, {6} parameters",
                              kernel.name, g.x, g.y, g.z, config.numWarps,
                              config.dynamicSharedBytes, args.size()));
  return kvarn::Error::success();
}

//===----------------------------------------------------------------------===//
// LoadedKernel
//===----------------------------------------------------------------------===//

kvarn::Expected<LoadedKernel> LoadedKernel::load(const Context &context,
                                                 const KernelImage &image) {
  if (image.name.empty() || (image.ptx.empty() && image.cubin.empty()))
    return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                     "LoadedKernel::load: a kernel image needs a name and PTX "
                     "or a cubin");
  // What launch() divides the grid by: a hand-built or corrupt image must
  // fail here, not launch CTAs whose programs overlap.
  int programs = std::max(image.programsPerCta, 1);
  if (!threadsPerProgram(image.numWarps, programs))
    return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                     "LoadedKernel::load: kernel '{0}' has {1} warps and {2} "
                     "programs a CTA: warps must be 1 to {3} and the programs "
                     "must divide the CTA into whole warps or equal parts of "
                     "one",
                     image.name, image.numWarps, programs, kMaxWarpsPerCta);
  LoadedKernel loaded;
  loaded.ctx = context.ref();
  loaded.warps = image.numWarps;
  loaded.shared = image.sharedBytes;
  loaded.programs = programs;
  loaded.ctasPerMultiprocessor = std::max(image.ctasPerSM, 1);
  loaded.programmaticDependent = image.launchPdl;
  loaded.signature = image.abi;
  kvarn::Expected<Module> module =
      image.cubin.empty() ? Module::loadPtx(context, image.ptx)
                          : Module::loadCubin(context, image.cubin);
  if (!module)
    return withContext(module.takeError(), "loading kernel '" + image.name + "'");
  loaded.module = std::move(*module);
  kvarn::Expected<Kernel> kernel =
      loaded.module.getKernel(image.name, image.sharedBytes);
  if (!kernel)
    return kernel.takeError();
  loaded.function = std::move(*kernel);
  return std::move(loaded);
}

kvarn::Error cuda::checkArguments(std::string_view name, const KernelAbi &abi,
                                  const KernelArgs &args) {
  if (abi.params.empty())
    return kvarn::Error::success();
  if (args.size() != abi.params.size() + 2)
    return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                     "kernel '{0}': {1} arguments; it takes {2} (its {3} "
                     "parameters and the two scratch pointers)",
                     name, args.size(), abi.params.size() + 2,
                     abi.params.size());
  auto kindName = [](KernelArgs::Kind k) {
    switch (k) {
    case KernelArgs::Kind::Pointer:
      return "a pointer";
    case KernelArgs::Kind::I32:
      return "i32";
    case KernelArgs::Kind::I64:
      return "i64";
    case KernelArgs::Kind::F32:
      return "f32";
    }
    return "?";
  };
  for (size_t i = 0; i < args.size(); ++i) {
    KernelArgs::Kind want = KernelArgs::Kind::Pointer; // the scratch pointers
    std::string what = i < abi.params.size() ? abi.params[i].name : "scratch";
    if (i < abi.params.size())
      switch (abi.params[i].passed().value_or(KernelAbi::Passed::I32)) {
      case KernelAbi::Passed::Pointer:
        break;
      case KernelAbi::Passed::I32:
        want = KernelArgs::Kind::I32;
        break;
      case KernelAbi::Passed::I64:
        want = KernelArgs::Kind::I64;
        break;
      case KernelAbi::Passed::F32:
        want = KernelArgs::Kind::F32;
        break;
      }
    if (args.kind(i) != want)
      return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                       "kernel '{0}': argument {1} ({2}) is {3}; the kernel "
                       "takes {4}",
                       name, i, what, kindName(args.kind(i)), kindName(want));
  }
  return kvarn::Error::success();
}

kvarn::Expected<KernelArgs> cuda::bindArguments(std::string_view name,
                                                const KernelAbi &abi,
                                                Span<const NamedArg> named) {
  if (abi.params.empty())
    return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                     "kernel '{0}': its image carries no parameter names (ABI)",
                     name);
  for (size_t i = 0; i < named.size(); ++i) {
    auto same = [&](const NamedArg &a) {
      return std::string_view(a.name) == named[i].name;
    };
    if (std::none_of(
            abi.params.begin(), abi.params.end(),
            [&](const KernelAbi::Param &p) { return p.name == named[i].name; }))
      return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                       "kernel '{0}' has no parameter '{1}'", name,
                       named[i].name);
    if (std::any_of(named.begin(), named.begin() + i, same))
      return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                       "kernel '{0}': '{1}' is given twice", name,
                       named[i].name);
  }
  KernelArgs args;
  for (const KernelAbi::Param &p : abi.params) {
    const NamedArg *a =
        std::find_if(named.begin(), named.end(),
                     [&](const NamedArg &n) { return p.name == n.name; });
    if (a == named.end())
      return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                       "kernel '{0}': no argument for its parameter '{1}'",
                       name, p.name);
    args.raw(a->kind, a->bits);
  }
  args.scratch();
  // Kinds against the parameters' types, with checkArguments' messages.
  if (kvarn::Error err = checkArguments(name, abi, args))
    return std::move(err);
  return std::move(args);
}

kvarn::Error LoadedKernel::launch(Grid grid, KernelArgs &args,
                                  CUstream stream) const {
  if (kvarn::Error err = checkArguments(function.name, signature, args))
    return err;
  LaunchConfig config;
  config.grid = grid;
  config.grid.x = unsigned((uint64_t(grid.x) + programs - 1) / programs);
  config.numWarps = warps;
  config.dynamicSharedBytes = shared;
  config.stream = stream;
  config.programmaticDependent = programmaticDependent;
  return cuda::launch(ctx, function, config, args);
}

kvarn::Expected<Grid> cuda::gridOf(std::string_view name, const KernelAbi &abi,
                                   const KernelArgs &args) {
  if (abi.params.empty() || abi.grid.empty() || abi.grid.size() > 3)
    return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                     "kernel '{0}': its image carries no grid rule (ABI)",
                     name);
  unsigned extents[3] = {1, 1, 1};
  for (size_t axis = 0; axis < abi.grid.size(); ++axis) {
    int g = abi.grid[axis];
    int64_t n = -1 - int64_t(g); // a constant extent
    if (g >= 0) {
      if (size_t(g) >= abi.params.size() || size_t(g) >= args.size() ||
          !abi.params[g].isInteger())
        return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                         "kernel '{0}': grid axis {1} names no integer "
                         "parameter",
                         name, axis);
      n = args.integer(size_t(g));
    }
    if (n < 0 || n > std::numeric_limits<int32_t>::max())
      return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                       "kernel '{0}': grid axis {1} ({2}) is {3}, must be 0 "
                       "to 2147483647",
                       name, axis,
                       g >= 0 ? abi.params[size_t(g)].name : "a constant", n);
    extents[axis] = unsigned(n);
  }
  return Grid{extents[0], extents[1], extents[2]};
}

kvarn::Error LoadedKernel::launch(KernelArgs &args, CUstream stream) const {
  if (kvarn::Error err = checkArguments(function.name, signature, args))
    return err;
  kvarn::Expected<Grid> grid = gridOf(function.name, signature, args);
  if (!grid)
    return grid.takeError();
  if (grid->empty())
    return kvarn::Error::success();
  return launch(*grid, args, stream);
}
