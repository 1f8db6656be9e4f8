//===- CudaDriver.cpp - the CUDA Driver API, loaded at run time -----------===//

#include "kvarn/Runtime/CudaDriver.h"

#include <dlfcn.h>

#include <cstdlib>

using namespace kvarn;
using namespace kvarn::cuda;

// Two steps, so that the argument is macro-expanded first: the header maps
// cuMemAlloc to cuMemAlloc_v2, and that is the symbol to look up.
#define KVARN_CUDA_SYMBOL_NAME(fn) KVARN_CUDA_STRINGIFY(fn)
#define KVARN_CUDA_STRINGIFY(x) #x

static const char *const kSymbolNames[] = {
#define KVARN_CUDA_NAME_ENTRY(fn) KVARN_CUDA_SYMBOL_NAME(fn),
    KVARN_CUDA_DRIVER_FUNCTIONS(KVARN_CUDA_NAME_ENTRY)
#undef KVARN_CUDA_NAME_ENTRY
};

Span<const char *const> Driver::symbolNames() { return kSymbolNames; }

kvarn_status_t cuda::statusForCudaResult(CUresult result) {
  switch (result) {
  case CUDA_SUCCESS:
    return KVARN_OK;
  case CUDA_ERROR_OUT_OF_MEMORY:
    return KVARN_ERROR_OUT_OF_MEMORY;
  case CUDA_ERROR_NO_DEVICE:
    return KVARN_ERROR_NO_DEVICE;
  case CUDA_ERROR_STUB_LIBRARY:
    return KVARN_ERROR_NO_DRIVER;
  case CUDA_ERROR_INVALID_PTX:
  case CUDA_ERROR_UNSUPPORTED_PTX_VERSION:
  case CUDA_ERROR_NO_BINARY_FOR_GPU:
  case CUDA_ERROR_INVALID_IMAGE:
  case CUDA_ERROR_JIT_COMPILER_NOT_FOUND:
  case CUDA_ERROR_JIT_COMPILATION_DISABLED:
    return KVARN_ERROR_COMPILE;
  default:
    return KVARN_ERROR_CUDA;
  }
}

std::string cuda::formatCudaError(std::string_view call, int result,
                                  const char *errorName,
                                  const char *errorString) {
  std::string message = std::string(call) + ": ";
  if (errorName)
    message += errorName;
  else
    message += "CUDA error " + std::to_string(result) +
               " (unknown to this driver)";
  if (errorString)
    message += std::string(": ") + errorString;
  return message;
}

kvarn::Error Driver::check(CUresult result, std::string_view call) const {
  if (result == CUDA_SUCCESS)
    return kvarn::Error::success();
  const char *name = nullptr, *description = nullptr;
  if (functions.cuGetErrorName(result, &name) != CUDA_SUCCESS)
    name = nullptr;
  if (functions.cuGetErrorString(result, &description) != CUDA_SUCCESS)
    description = nullptr;
  return makeError(statusForCudaResult(result), "{0}",
                   formatCudaError(call, result, name, description));
}

std::string Driver::defaultLibraryPath() {
  if (const char *path = std::getenv("KVARN_LIBCUDA"); path && *path)
    return path;
  return "libcuda.so.1";
}

Driver::~Driver() {
  if (handle)
    dlclose(handle);
}

/// The symbol to fall back on where the header's versioned one is missing
/// and the older one has the same signature (drivers before CUDA 12.8 lack
/// cuEventElapsedTime_v2).
static const char *olderSymbolWithSameSignature(std::string_view symbol) {
  if (symbol == "cuEventElapsedTime_v2")
    return "cuEventElapsedTime";
  return nullptr;
}

kvarn::Expected<std::unique_ptr<Driver>>
Driver::load(const std::string &libraryPath) {
  std::unique_ptr<Driver> driver(new Driver());
  // RTLD_LOCAL: the driver's symbols must not satisfy anyone else's lookups.
  driver->handle = dlopen(libraryPath.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!driver->handle) {
    const char *why = dlerror();
    return makeError(KVARN_ERROR_NO_DRIVER,
                     "no CUDA driver: cannot load {0} ({1}); kvarn needs the "
                     "NVIDIA driver to run kernels (compiling to PTX works "
                     "without one)",
                     libraryPath, why ? why : "unknown dlopen error");
  }

  void **slots[] = {
#define KVARN_CUDA_SLOT_ENTRY(fn)                                              \
  reinterpret_cast<void **>(&driver->functions.fn),
      KVARN_CUDA_DRIVER_FUNCTIONS(KVARN_CUDA_SLOT_ENTRY)
#undef KVARN_CUDA_SLOT_ENTRY
  };
  static_assert(std::size(slots) == std::size(kSymbolNames));
  for (size_t i = 0; i < std::size(slots); ++i) {
    void *symbol = dlsym(driver->handle, kSymbolNames[i]);
    if (!symbol)
      if (const char *older = olderSymbolWithSameSignature(kSymbolNames[i]))
        symbol = dlsym(driver->handle, older);
    if (!symbol)
      return makeError(KVARN_ERROR_NO_DRIVER,
                       "no usable CUDA driver: {0} has no {1}; the NVIDIA "
                       "driver is older than kvarn needs (a CUDA 12 driver or "
                       "newer)",
                       libraryPath, kSymbolNames[i]);
    *slots[i] = symbol;
  }

  Dl_info info;
  if (dladdr(reinterpret_cast<void *>(driver->functions.cuInit), &info) &&
      info.dli_fname)
    driver->loadedPath = info.dli_fname;
  else
    driver->loadedPath = libraryPath;

  CUresult init = driver->functions.cuInit(0);
  if (init == CUDA_ERROR_STUB_LIBRARY)
    return makeError(KVARN_ERROR_NO_DRIVER,
                     "no CUDA driver: {0} is the CUDA toolkit's stub library, "
                     "not the NVIDIA driver (is the driver installed, and is "
                     "the toolkit's stubs folder on LD_LIBRARY_PATH?)",
                     driver->loadedPath);
  if (init == CUDA_ERROR_NO_DEVICE)
    return makeError(KVARN_ERROR_NO_DEVICE,
                     "no GPU: the CUDA driver ({0}) found no device ({1})",
                     driver->loadedPath,
                     toString(driver->check(init, "cuInit")));
  if (kvarn::Error err = driver->check(init, "cuInit"))
    return err;
  if (kvarn::Error err =
          KVARN_CUDA_CHECK(*driver, cuDriverGetVersion, &driver->driverVersion))
    return err;
  if (kvarn::Error err =
          KVARN_CUDA_CHECK(*driver, cuDeviceGetCount, &driver->numDevices))
    return err;
  if (driver->numDevices == 0)
    return makeError(KVARN_ERROR_NO_DEVICE,
                     "no GPU: the CUDA driver ({0}) reports 0 devices",
                     driver->loadedPath);
  return std::move(driver);
}

namespace {
/// The outcome of the one process-wide load: a driver, or why there is none.
struct ProcessDriver {
  std::unique_ptr<Driver> driver;
  kvarn_status_t status = KVARN_OK;
  std::string message;
};
} // namespace

kvarn::Expected<const Driver &> Driver::get() {
  // Never destroyed: objects destroyed at exit may still call the driver,
  // and unloading libcuda at exit is a known source of crashes.
  static const ProcessDriver *process = [] {
    auto *p = new ProcessDriver();
    kvarn::Expected<std::unique_ptr<Driver>> loaded =
        load(defaultLibraryPath());
    if (loaded)
      p->driver = std::move(*loaded);
    else
      p->status = consumeError(loaded.takeError(), p->message);
    return p;
  }();
  if (!process->driver)
    return makeError(process->status, "{0}", process->message);
  return *process->driver;
}
