//===- CudaDriver.h - the CUDA Driver API, loaded at run time ---*- C++ -*-===//
//
// kvarn never links libcuda: it opens libcuda.so.1 with dlopen on first use,
// so the library and the tools load, and say clearly why they cannot run
// kernels, on machines without the NVIDIA driver or without a GPU.
//
// cuda.h is included for its types only. Its macros map API names to the
// versioned symbols the driver exports (cuMemAlloc -> cuMemAlloc_v2), so the
// function-pointer types below and the symbol names we resolve both follow the
// header; no function of cuda.h is ever called directly.
//
//===----------------------------------------------------------------------===//
#ifndef KVARN_RUNTIME_CUDADRIVER_H
#define KVARN_RUNTIME_CUDADRIVER_H

#ifdef CUDA_API_PER_THREAD_DEFAULT_STREAM
#error "kvarn resolves the legacy-stream entry points; do not build it with CUDA_API_PER_THREAD_DEFAULT_STREAM"
#endif
#include <cuda.h>

#include "kvarn/Support/Error.h"

#include "kvarn/Support/Span.h"
#include <string_view>

#include <memory>
#include <string>

namespace kvarn::cuda {

/// Every driver entry point kvarn uses. To use another one, add it here: the
/// loader resolves it and `KVARN_CUDA_CHECK` can call it.
#define KVARN_CUDA_DRIVER_FUNCTIONS(X)                                         \
  X(cuGetErrorName)                                                            \
  X(cuGetErrorString)                                                          \
  X(cuInit)                                                                    \
  X(cuDriverGetVersion)                                                        \
  X(cuDeviceGetCount)                                                          \
  X(cuDeviceGet)                                                               \
  X(cuDeviceGetName)                                                           \
  X(cuDeviceGetAttribute)                                                      \
  X(cuDeviceTotalMem)                                                          \
  X(cuDevicePrimaryCtxRetain)                                                  \
  X(cuDevicePrimaryCtxRelease)                                                 \
  X(cuCtxGetCurrent)                                                           \
  X(cuCtxSetCurrent)                                                           \
  X(cuCtxSynchronize)                                                          \
  X(cuMemGetInfo)                                                              \
  X(cuMemAlloc)                                                                \
  X(cuMemFree)                                                                 \
  X(cuMemcpyHtoD)                                                              \
  X(cuMemcpyDtoH)                                                              \
  X(cuMemcpyDtoD)                                                              \
  X(cuMemcpyHtoDAsync)                                                         \
  X(cuMemcpyDtoHAsync)                                                         \
  X(cuMemcpyDtoDAsync)                                                         \
  X(cuMemsetD8)                                                                \
  X(cuMemsetD16)                                                               \
  X(cuMemsetD32)                                                               \
  X(cuMemsetD8Async)                                                           \
  X(cuMemsetD16Async)                                                          \
  X(cuMemsetD32Async)                                                          \
  X(cuModuleLoadData)                                                          \
  X(cuModuleLoadDataEx)                                                        \
  X(cuModuleGetFunction)                                                       \
  X(cuModuleUnload)                                                            \
  X(cuLinkCreate)                                                              \
  X(cuLinkAddData)                                                             \
  X(cuLinkComplete)                                                            \
  X(cuLinkDestroy)                                                             \
  X(cuFuncGetAttribute)                                                        \
  X(cuFuncSetAttribute)                                                        \
  X(cuLaunchKernelEx)                                                          \
  X(cuStreamCreate)                                                            \
  X(cuStreamSynchronize)                                                       \
  X(cuStreamDestroy)                                                           \
  X(cuEventCreate)                                                             \
  X(cuEventRecord)                                                             \
  X(cuEventSynchronize)                                                        \
  X(cuEventElapsedTime)                                                        \
  X(cuEventDestroy)

/// Calls a driver entry point through `driver` and turns a failure into a
/// kvarn error naming the call: `KVARN_CUDA_CHECK(d, cuMemAlloc, &p, n)`.
#define KVARN_CUDA_CHECK(driver, fn, ...)                                      \
  (driver).check((driver).api().fn(__VA_ARGS__), #fn)

/// The kvarn status a failed driver call maps to: out of memory, no device,
/// a PTX the JIT rejected (KVARN_ERROR_COMPILE), anything else KVARN_ERROR_CUDA.
kvarn_status_t statusForCudaResult(CUresult result);

/// "cuModuleLoadData: CUDA_ERROR_INVALID_PTX: a PTX JIT compilation failed".
/// `errorName`/`errorString` are what cuGetErrorName/String gave, null when
/// the driver does not know the code.
std::string formatCudaError(std::string_view call, int result,
                            const char *errorName, const char *errorString);

/// The loaded driver: its entry points and what cuInit found.
class Driver {
public:
  /// The function pointers, one per entry of KVARN_CUDA_DRIVER_FUNCTIONS,
  /// each typed as cuda.h declares it.
  struct Functions {
#define KVARN_CUDA_DECLARE_POINTER(fn) decltype(&::fn) fn = nullptr;
    KVARN_CUDA_DRIVER_FUNCTIONS(KVARN_CUDA_DECLARE_POINTER)
#undef KVARN_CUDA_DECLARE_POINTER
  };

  /// The process-wide driver, loaded and initialized once (thread-safe) from
  /// defaultLibraryPath(). Fails with KVARN_ERROR_NO_DRIVER (no libcuda, the
  /// toolkit's stub, a driver too old), KVARN_ERROR_NO_DEVICE (no GPU) or
  /// KVARN_ERROR_CUDA; every call after the first returns the same outcome.
  static kvarn::Expected<const Driver &> get();

  /// Loads the driver from `libraryPath` and runs cuInit, for callers (tests)
  /// that want their own instance; most code wants get().
  static kvarn::Expected<std::unique_ptr<Driver>>
  load(const std::string &libraryPath);

  /// $KVARN_LIBCUDA if set (to test other drivers, or to force the no-driver
  /// path), else "libcuda.so.1" found by the dynamic loader.
  static std::string defaultLibraryPath();

  /// The exported symbol each entry point resolves to, in the order of
  /// KVARN_CUDA_DRIVER_FUNCTIONS ("cuMemAlloc_v2", "cuLaunchKernelEx", ...).
  static Span<const char *const> symbolNames();

  ~Driver();
  Driver(const Driver &) = delete;
  Driver &operator=(const Driver &) = delete;

  const Functions &api() const { return functions; }

  /// kvarn::Error::success() for CUDA_SUCCESS, else a kvarn error whose message
  /// names `call` and the CUDA error (see formatCudaError).
  kvarn::Error check(CUresult result, std::string_view call) const;

  /// cuDriverGetVersion: 1000 * major + 10 * minor (13000 for CUDA 13.0).
  int version() const { return driverVersion; }
  int deviceCount() const { return numDevices; }
  /// The file the dynamic loader opened ("/usr/lib/x86_64-linux-gnu/libcuda.so.1").
  const std::string &libraryPath() const { return loadedPath; }

private:
  Driver() = default;

  void *handle = nullptr;
  Functions functions;
  int driverVersion = 0;
  int numDevices = 0;
  std::string loadedPath;
};

} // namespace kvarn::cuda

#endif // KVARN_RUNTIME_CUDADRIVER_H
