//===- RuntimeTest.cpp - the runtime, as far as it goes without a GPU -----===//
//
// The driver loader's failure paths, error formatting, kernel parameters,
// launch checks and ptxas. What needs a GPU is in test/gpu.
//
//===----------------------------------------------------------------------===//

#include "kvarn/Runtime/CudaDriver.h"
#include "kvarn/Runtime/Module.h"
#include "kvarn/Runtime/PtxAssembler.h"

#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FileUtilities.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <optional>
#include <thread>
#include <vector>

using namespace kvarn;
using namespace kvarn::cuda;

namespace {

/// Sets (or, with nullptr, unsets) an environment variable for a scope.
class ScopedEnv {
public:
  ScopedEnv(const char *name, const char *value) : name(name) {
    if (const char *old = std::getenv(name))
      previous = old;
    if (value)
      setenv(name, value, 1);
    else
      unsetenv(name);
  }
  ~ScopedEnv() {
    if (previous)
      setenv(name, previous->c_str(), 1);
    else
      unsetenv(name);
  }

private:
  const char *name;
  std::optional<std::string> previous;
};

/// The status and message of an error, consuming it.
std::pair<kvarn_status_t, std::string> statusAndMessage(kvarn::Error err) {
  std::string message;
  kvarn_status_t status = kvarn::consumeError(std::move(err), message);
  return {status, message};
}

template <typename T>
std::pair<kvarn_status_t, std::string> statusAndMessage(kvarn::Expected<T> &v) {
  if (v)
    return {KVARN_OK, ""};
  return statusAndMessage(v.takeError());
}

bool contains(const std::string &haystack, const std::string &needle) {
  return haystack.find(needle) != std::string::npos;
}

/// A PTX module with no kernels in it: enough for the assembler to produce an
/// (empty) cubin, and no hand-written kernel.
std::string ptxModuleWithNoKernels(const std::string &arch) {
  return ".version 8.0\n.target " + arch + "\n.address_size 64\n";
}

} // namespace

//===----------------------------------------------------------------------===//
// Errors
//===----------------------------------------------------------------------===//

TEST(CudaErrors, MessagesNameTheCallAndTheError) {
  EXPECT_EQ(formatCudaError("cuModuleLoadData", 218, "CUDA_ERROR_INVALID_PTX",
                            "a PTX JIT compilation failed"),
            "cuModuleLoadData: CUDA_ERROR_INVALID_PTX: a PTX JIT compilation "
            "failed");
  EXPECT_EQ(formatCudaError("cuMemAlloc", 12345, nullptr, nullptr),
            "cuMemAlloc: CUDA error 12345 (unknown to this driver)");
}

TEST(CudaErrors, StatusesFollowWhatWentWrong) {
  EXPECT_EQ(statusForCudaResult(CUDA_SUCCESS), KVARN_OK);
  EXPECT_EQ(statusForCudaResult(CUDA_ERROR_OUT_OF_MEMORY),
            KVARN_ERROR_OUT_OF_MEMORY);
  EXPECT_EQ(statusForCudaResult(CUDA_ERROR_NO_DEVICE), KVARN_ERROR_NO_DEVICE);
  EXPECT_EQ(statusForCudaResult(CUDA_ERROR_STUB_LIBRARY),
            KVARN_ERROR_NO_DRIVER);
  EXPECT_EQ(statusForCudaResult(CUDA_ERROR_INVALID_PTX), KVARN_ERROR_COMPILE);
  EXPECT_EQ(statusForCudaResult(CUDA_ERROR_NO_BINARY_FOR_GPU),
            KVARN_ERROR_COMPILE);
  EXPECT_EQ(statusForCudaResult(CUDA_ERROR_ILLEGAL_ADDRESS), KVARN_ERROR_CUDA);
}

TEST(CudaErrors, WithContextKeepsTheStatus) {
  auto [status, message] = statusAndMessage(withContext(
      makeError(KVARN_ERROR_OUT_OF_MEMORY, "cuMemAlloc: CUDA_ERROR_OUT_OF_MEMORY"),
      "allocating 64 bytes on GPU 0"));
  EXPECT_EQ(status, KVARN_ERROR_OUT_OF_MEMORY);
  EXPECT_EQ(message,
            "cuMemAlloc: CUDA_ERROR_OUT_OF_MEMORY (allocating 64 bytes on GPU 0)");
  EXPECT_FALSE(bool(withContext(kvarn::Error::success(), "nothing")));
}

//===----------------------------------------------------------------------===//
// The driver loader
//===----------------------------------------------------------------------===//

TEST(CudaDriver, ResolvesTheVersionedSymbolsOfTheHeader) {
  Span<const char *const> names = Driver::symbolNames();
  auto has = [&](llvm::StringRef name) {
    return llvm::is_contained(names, name);
  };
  EXPECT_TRUE(has("cuMemAlloc_v2"));
  EXPECT_TRUE(has("cuMemFree_v2"));
  EXPECT_TRUE(has("cuMemcpyHtoD_v2"));
  EXPECT_TRUE(has("cuMemsetD32_v2"));
  EXPECT_TRUE(has("cuLinkCreate_v2"));
  EXPECT_TRUE(has("cuLinkAddData_v2"));
  EXPECT_TRUE(has("cuDevicePrimaryCtxRelease_v2"));
  EXPECT_TRUE(has("cuStreamDestroy_v2"));
  EXPECT_TRUE(has("cuEventDestroy_v2"));
  EXPECT_TRUE(has("cuDeviceTotalMem_v2"));
  EXPECT_TRUE(has("cuLaunchKernelEx"));
  EXPECT_TRUE(has("cuModuleLoadDataEx"));
  EXPECT_TRUE(has("cuFuncSetAttribute"));
  for (llvm::StringRef name : names) {
    EXPECT_FALSE(name.ends_with("_ptsz") || name.ends_with("_ptds")) << name.str();
    EXPECT_TRUE(name.starts_with("cu")) << name.str();
  }
}

TEST(CudaDriver, AMissingLibraryIsNoDriver) {
  kvarn::Expected<std::unique_ptr<Driver>> driver =
      Driver::load("/nonexistent/kvarn-test/libcuda.so.1");
  auto [status, message] = statusAndMessage(driver);
  EXPECT_EQ(status, KVARN_ERROR_NO_DRIVER);
  EXPECT_TRUE(contains(message, "no CUDA driver")) << message;
  EXPECT_TRUE(contains(message, "/nonexistent/kvarn-test/libcuda.so.1"))
      << message;
  EXPECT_TRUE(contains(message, "No such file")) << message; // dlerror()
}

TEST(CudaDriver, AFileThatIsNoLibraryIsNoDriver) {
  llvm::SmallString<128> path;
  ASSERT_FALSE(llvm::sys::fs::createTemporaryFile("kvarn-not-a-lib", "so", path));
  llvm::FileRemover remover(path);
  std::ofstream(path.c_str()) << "not an ELF file\n";
  kvarn::Expected<std::unique_ptr<Driver>> driver =
      Driver::load(path.str().str());
  auto [status, message] = statusAndMessage(driver);
  EXPECT_EQ(status, KVARN_ERROR_NO_DRIVER);
  EXPECT_TRUE(contains(message, path.str().str())) << message;
}

TEST(CudaDriver, TheToolkitStubIsNoDriver) {
  const char *stub = "/usr/local/cuda/lib64/stubs/libcuda.so";
  if (!llvm::sys::fs::exists(stub))
    GTEST_SKIP() << "no CUDA toolkit stub at " << stub;
  kvarn::Expected<std::unique_ptr<Driver>> driver = Driver::load(stub);
  auto [status, message] = statusAndMessage(driver);
  EXPECT_EQ(status, KVARN_ERROR_NO_DRIVER);
  EXPECT_TRUE(contains(message, "stub")) << message;
}

TEST(CudaDriver, TheLibraryPathCanBeOverridden) {
  {
    ScopedEnv env("KVARN_LIBCUDA", "/opt/test/libcuda.so.1");
    EXPECT_EQ(Driver::defaultLibraryPath(), "/opt/test/libcuda.so.1");
  }
  ScopedEnv env("KVARN_LIBCUDA", nullptr);
  EXPECT_EQ(Driver::defaultLibraryPath(), "libcuda.so.1");
}

TEST(CudaDriver, TheProcessDriverGivesOneAnswerToEveryThread) {
  // Whatever this machine has, every thread sees the same outcome.
  std::vector<std::pair<kvarn_status_t, std::string>> outcomes(8);
  std::vector<std::thread> threads;
  for (auto &outcome : outcomes)
    threads.emplace_back([&outcome] {
      kvarn::Expected<const Driver &> driver = Driver::get();
      outcome = statusAndMessage(driver);
    });
  for (std::thread &t : threads)
    t.join();
  for (auto &outcome : outcomes)
    EXPECT_EQ(outcome, outcomes[0]);
  kvarn_status_t status = outcomes[0].first;
  EXPECT_TRUE(status == KVARN_OK || status == KVARN_ERROR_NO_DRIVER ||
              status == KVARN_ERROR_NO_DEVICE)
      << outcomes[0].second;
  if (status != KVARN_OK) {
    EXPECT_FALSE(outcomes[0].second.empty());
  }
}

//===----------------------------------------------------------------------===//
// Kernel parameters and launch checks
//===----------------------------------------------------------------------===//

TEST(KernelArgs, FollowTritonsOrderWithTwoTrailingScratchPointers) {
  KernelArgs args;
  args.pointer(CUdeviceptr(0x7f0000001000))
      .i32(-3)
      .f32(1.5f)
      .i64(int64_t(1) << 40)
      .u32(7u)
      .scratch();
  ASSERT_EQ(args.size(), 7u);
  void **data = args.data();
  EXPECT_EQ(*static_cast<CUdeviceptr *>(data[0]), CUdeviceptr(0x7f0000001000));
  EXPECT_EQ(*static_cast<int32_t *>(data[1]), -3);
  EXPECT_EQ(*static_cast<float *>(data[2]), 1.5f);
  EXPECT_EQ(*static_cast<int64_t *>(data[3]), int64_t(1) << 40);
  EXPECT_EQ(*static_cast<uint32_t *>(data[4]), 7u);
  EXPECT_EQ(*static_cast<CUdeviceptr *>(data[5]), CUdeviceptr(0));
  EXPECT_EQ(*static_cast<CUdeviceptr *>(data[6]), CUdeviceptr(0));
}

TEST(Launch, ChecksTheConfigurationAgainstTheKernel) {
  Kernel kernel;
  kernel.name = "flush";
  kernel.attributes.maxThreadsPerBlock = 1024;
  kernel.attributes.maxDynamicSharedBytes = 48 * 1024;

  LaunchConfig ok;
  ok.grid = {2048, 1, 1};
  ok.numWarps = 8;
  ok.dynamicSharedBytes = 32 * 1024;
  EXPECT_FALSE(bool(checkLaunchConfig(kernel, ok)));

  auto failure = [&](LaunchConfig config) {
    return statusAndMessage(checkLaunchConfig(kernel, config));
  };
  LaunchConfig tooManyWarps = ok;
  tooManyWarps.numWarps = 64;
  auto [status, message] = failure(tooManyWarps);
  EXPECT_EQ(status, KVARN_ERROR_INVALID_ARGUMENT);
  EXPECT_TRUE(contains(message, "'flush'") && contains(message, "2048 threads"))
      << message;

  LaunchConfig tooMuchShared = ok;
  tooMuchShared.dynamicSharedBytes = 100 * 1024;
  std::tie(status, message) = failure(tooMuchShared);
  EXPECT_EQ(status, KVARN_ERROR_INVALID_ARGUMENT);
  EXPECT_TRUE(contains(message, "102400")) << message;

  LaunchConfig emptyGrid = ok;
  emptyGrid.grid = {0, 1, 1};
  EXPECT_EQ(failure(emptyGrid).first, KVARN_ERROR_INVALID_ARGUMENT);
}

//===----------------------------------------------------------------------===//
// ptxas
//===----------------------------------------------------------------------===//

TEST(AssemblerLog, ReadsTheFiguresOfEachEntryFunction) {
  // What ptxas 13.0 -v prints for two entries and a device function.
  const char *log =
      "ptxas info    : 0 bytes gmem\n"
      "ptxas info    : Compiling entry function 'big' for 'sm_90'\n"
      "ptxas info    : Function properties for big\n"
      "    256 bytes stack frame, 8 bytes spill stores, 12 bytes spill loads\n"
      "ptxas info    : Used 40 registers, used 0 barriers, 256 bytes "
      "cumulative stack size\n"
      "ptxas info    : Compile time = 14.002 ms\n"
      "ptxas info    : Function properties for _Z6helperf\n"
      "    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n"
      "ptxas info    : Compiling entry function 'add' for 'sm_90'\n"
      "ptxas info    : Function properties for add\n"
      "    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n"
      "ptxas info    : Used 10 registers, used 1 barriers, 1024 bytes smem\n";
  std::vector<KernelResources> kernels = parseAssemblerLog(log);
  ASSERT_EQ(kernels.size(), 2u);
  EXPECT_EQ(kernels[0].name, "big");
  EXPECT_EQ(kernels[0].arch, "sm_90");
  EXPECT_EQ(kernels[0].registers, 40);
  EXPECT_EQ(kernels[0].barriers, 0);
  EXPECT_EQ(kernels[0].sharedBytes, 0);
  EXPECT_EQ(kernels[0].stackFrameBytes, 256);
  EXPECT_EQ(kernels[0].spillStoreBytes, 8);
  EXPECT_EQ(kernels[0].spillLoadBytes, 12);
  EXPECT_TRUE(kernels[0].spills());
  EXPECT_EQ(kernels[1].name, "add");
  EXPECT_EQ(kernels[1].registers, 10);
  EXPECT_EQ(kernels[1].barriers, 1);
  EXPECT_EQ(kernels[1].sharedBytes, 1024);
  EXPECT_EQ(kernels[1].stackFrameBytes, 0);
  EXPECT_FALSE(kernels[1].spills());
}

TEST(Ptxas, CandidatesFollowTheEnvironmentFirst) {
  ScopedEnv explicitPath("KVARN_PTXAS", "/opt/explicit/ptxas");
  ScopedEnv home("CUDA_HOME", "/opt/cuda-home");
  ScopedEnv path("CUDA_PATH", nullptr);
  std::vector<std::string> candidates = ptxasCandidates();
  ASSERT_GE(candidates.size(), 3u);
  EXPECT_EQ(candidates[0], "/opt/explicit/ptxas");
  EXPECT_EQ(candidates[1], "/opt/cuda-home/bin/ptxas");
  EXPECT_TRUE(llvm::is_contained(candidates, "/usr/local/cuda/bin/ptxas"));
}

TEST(Ptxas, AnExplicitPathMustBeAProgram) {
  ScopedEnv explicitPath("KVARN_PTXAS", "/nonexistent/ptxas");
  kvarn::Expected<std::string> found = findPtxas({"/nonexistent/ptxas"});
  auto [status, message] = statusAndMessage(found);
  EXPECT_EQ(status, KVARN_ERROR_IO);
  EXPECT_TRUE(contains(message, "KVARN_PTXAS") &&
              contains(message, "/nonexistent/ptxas"))
      << message;
}

// A KVARN_PTXAS that leads nowhere falls back to the next ptxas, and says
// so (it used to give PTX only, silently).
TEST(Ptxas, AWrongExplicitPathFallsBackWithAWarning) {
  ScopedEnv explicitPath("KVARN_PTXAS", "/nonexistent/ptxas");
  std::string warning;
  // /bin/sh stands in for a toolkit's ptxas: an executable file.
  kvarn::Expected<std::string> found =
      findPtxas({"/nonexistent/ptxas", "/bin/sh"}, &warning);
  ASSERT_TRUE(bool(found)) << kvarn::toString(found.takeError());
  EXPECT_EQ(*found, "/bin/sh");
  EXPECT_TRUE(contains(warning, "KVARN_PTXAS is '/nonexistent/ptxas'") &&
              contains(warning, "using /bin/sh"))
      << warning;
}

TEST(Ptxas, NoToolkitSaysWhereItLooked) {
  ScopedEnv explicitPath("KVARN_PTXAS", nullptr);
  kvarn::Expected<std::string> found =
      findPtxas({"/nonexistent/a/bin/ptxas", "/nonexistent/b/bin/ptxas"});
  auto [status, message] = statusAndMessage(found);
  EXPECT_EQ(status, KVARN_ERROR_IO);
  EXPECT_TRUE(contains(message, "/nonexistent/a/bin/ptxas, "
                                "/nonexistent/b/bin/ptxas"))
      << message;
  EXPECT_TRUE(contains(message, "CUDA_HOME")) << message;
}

TEST(Ptxas, AssemblesAModuleIntoACubin) {
  kvarn::Expected<std::string> ptxas = findPtxas();
  if (!ptxas)
    GTEST_SKIP() << "no ptxas here: " << kvarn::toString(ptxas.takeError());
  for (const char *arch : {"sm_80", "sm_90"}) {
    PtxasOptions options;
    options.arch = arch;
    kvarn::Expected<CubinImage> cubin =
        assembleWithPtxas(ptxModuleWithNoKernels(arch), options);
    ASSERT_TRUE(bool(cubin)) << kvarn::toString(cubin.takeError());
    ASSERT_GE(cubin->bytes.size(), 4u);
    EXPECT_EQ(cubin->bytes.substr(0, 4), "\x7f" "ELF");
    EXPECT_TRUE(cubin->kernels.empty());
  }
}

TEST(Ptxas, RejectedPtxIsACompileErrorWithPtxasMessages) {
  kvarn::Expected<std::string> ptxas = findPtxas();
  if (!ptxas)
    GTEST_SKIP() << "no ptxas here: " << kvarn::toString(ptxas.takeError());
  kvarn::Expected<CubinImage> cubin = assembleWithPtxas("this is not PTX\n");
  auto [status, message] = statusAndMessage(cubin);
  EXPECT_EQ(status, KVARN_ERROR_COMPILE);
  EXPECT_TRUE(contains(message, "ptxas failed for sm_90")) << message;
  EXPECT_TRUE(contains(message, ".version")) << message; // ptxas's own words
}
