//===- Context.cpp - a GPU and its primary context ------------------------===//

#include "kvarn/Runtime/Context.h"

#include "Internal.h"

using namespace kvarn;
using namespace kvarn::cuda;

std::string DeviceInfo::arch() const {
  return "sm_" + std::to_string(computeMajor) + std::to_string(computeMinor);
}

kvarn::Expected<ScopedContext> ScopedContext::enter(const Driver &driver,
                                                    CUcontext context) {
  CUcontext previous = nullptr;
  if (kvarn::Error err = KVARN_CUDA_CHECK(driver, cuCtxGetCurrent, &previous))
    return std::move(err);
  if (previous == context)
    return ScopedContext(&driver, previous, /*restore=*/false);
  if (kvarn::Error err = KVARN_CUDA_CHECK(driver, cuCtxSetCurrent, context))
    return std::move(err);
  return ScopedContext(&driver, previous, /*restore=*/true);
}

ScopedContext::ScopedContext(ScopedContext &&other) noexcept
    : driver(other.driver), previous(other.previous), restore(other.restore) {
  other.restore = false;
}

ScopedContext::~ScopedContext() {
  if (restore)
    (void)driver->api().cuCtxSetCurrent(previous);
}

kvarn::Expected<DeviceInfo> cuda::queryDevice(const Driver &driver,
                                              int ordinal) {
  if (ordinal < 0 || ordinal >= driver.deviceCount())
    return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                     "no GPU {0}: the driver reports {1} device(s)", ordinal,
                     driver.deviceCount());
  CUdevice device = 0;
  if (kvarn::Error err =
          KVARN_CUDA_CHECK(driver, cuDeviceGet, &device, ordinal))
    return std::move(err);

  DeviceInfo info;
  info.ordinal = ordinal;
  char name[256] = {};
  if (kvarn::Error err =
          KVARN_CUDA_CHECK(driver, cuDeviceGetName, name, sizeof name, device))
    return std::move(err);
  info.name = name;
  size_t totalBytes = 0;
  if (kvarn::Error err =
          KVARN_CUDA_CHECK(driver, cuDeviceTotalMem, &totalBytes, device))
    return std::move(err);
  info.totalMemoryBytes = int64_t(totalBytes);

  struct {
    CUdevice_attribute attribute;
    int *field;
  } attributes[] = {
      {CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, &info.computeMajor},
      {CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, &info.computeMinor},
      {CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, &info.multiprocessors},
      {CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK,
       &info.maxSharedBytesPerBlock},
      {CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN,
       &info.maxSharedBytesPerBlockOptin},
      {CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE, &info.l2CacheBytes},
      {CU_DEVICE_ATTRIBUTE_CLOCK_RATE, &info.clockRateKHz},
      {CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH, &info.memoryBusWidthBits},
  };
  for (auto &[attribute, field] : attributes)
    if (kvarn::Error err = KVARN_CUDA_CHECK(driver, cuDeviceGetAttribute, field,
                                            attribute, device))
      return std::move(err);
  return info;
}

kvarn::Expected<Context> Context::create(int ordinal) {
  kvarn::Expected<const Driver &> driver = Driver::get();
  if (!driver)
    return driver.takeError();
  kvarn::Expected<DeviceInfo> info = queryDevice(*driver, ordinal);
  if (!info)
    return info.takeError();

  Context context;
  context.drv = &*driver;
  context.deviceInfo = std::move(*info);
  if (kvarn::Error err =
          KVARN_CUDA_CHECK(*driver, cuDeviceGet, &context.dev, ordinal))
    return std::move(err);
  if (kvarn::Error err = KVARN_CUDA_CHECK(*driver, cuDevicePrimaryCtxRetain,
                                          &context.context, context.dev))
    return std::move(err);
  return std::move(context);
}

Context::Context(Context &&other) noexcept { *this = std::move(other); }

Context &Context::operator=(Context &&other) noexcept {
  if (this != &other) {
    release();
    drv = other.drv;
    dev = other.dev;
    context = other.context;
    deviceInfo = std::move(other.deviceInfo);
    other.context = nullptr;
  }
  return *this;
}

Context::~Context() { release(); }

void Context::release() {
  if (context)
    (void)drv->api().cuDevicePrimaryCtxRelease(dev);
  context = nullptr;
}

kvarn::Error Context::synchronize() const {
  KVARN_ENTER_CONTEXT(*this);
  return KVARN_CUDA_CHECK(*drv, cuCtxSynchronize);
}

kvarn::Expected<Context::MemoryInfo> Context::memoryInfo() const {
  KVARN_ENTER_CONTEXT(*this);
  size_t freeBytes = 0, totalBytes = 0;
  if (kvarn::Error err =
          KVARN_CUDA_CHECK(*drv, cuMemGetInfo, &freeBytes, &totalBytes))
    return std::move(err);
  return MemoryInfo{int64_t(freeBytes), int64_t(totalBytes)};
}
