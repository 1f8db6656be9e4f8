//===- Context.h - a GPU and its primary context ----------------*- C++ -*-===//
//
// kvarn works in each device's primary context, the one the CUDA runtime,
// PyTorch and Triton use, so device pointers and streams pass freely between
// them and kvarn.
//
//===----------------------------------------------------------------------===//
#ifndef KVARN_RUNTIME_CONTEXT_H
#define KVARN_RUNTIME_CONTEXT_H

#include "kvarn/Runtime/CudaDriver.h"

#include <cstdint>
#include <string>

namespace kvarn::cuda {

/// What kvarn needs to know about a GPU to compile and launch for it.
struct DeviceInfo {
  int ordinal = 0;
  std::string name;              // "NVIDIA H100 80GB HBM3"
  int computeMajor = 0;          // 9 for sm_90
  int computeMinor = 0;
  int multiprocessors = 0;
  int64_t totalMemoryBytes = 0;
  int maxSharedBytesPerBlock = 0;      // without opting in (48 KiB)
  int maxSharedBytesPerBlockOptin = 0; // with cuFuncSetAttribute (227 KiB on sm_90)
  int l2CacheBytes = 0;
  int clockRateKHz = 0;
  int memoryBusWidthBits = 0;

  /// "sm_90": the target the compiler and ptxas take.
  std::string arch() const;
};

/// Sets a context current on the calling thread for its lifetime and restores
/// the one that was current before; a no-op when it already is current. Every
/// runtime call that needs a context goes through one, so kvarn objects work
/// from any thread without disturbing a host that uses other contexts.
class ScopedContext {
public:
  static kvarn::Expected<ScopedContext> enter(const Driver &driver,
                                              CUcontext context);
  ScopedContext(ScopedContext &&other) noexcept;
  ScopedContext &operator=(ScopedContext &&) = delete;
  ~ScopedContext();

private:
  ScopedContext(const Driver *driver, CUcontext previous, bool restore)
      : driver(driver), previous(previous), restore(restore) {}
  const Driver *driver;
  CUcontext previous;
  bool restore;
};

/// What objects made in a Context keep of it: the driver and the raw primary
/// context, which stay valid while the primary context is retained. Unlike a
/// pointer to the Context, this survives the Context being moved.
class ContextRef {
public:
  ContextRef() = default;
  ContextRef(const Driver *driver, CUcontext context)
      : drv(driver), context(context) {}
  const Driver &driver() const { return *drv; }
  CUcontext handle() const { return context; }
  kvarn::Expected<ScopedContext> enter() const {
    return ScopedContext::enter(*drv, context);
  }

private:
  const Driver *drv = nullptr;
  CUcontext context = nullptr;
};

/// A device and its retained primary context. Buffers, streams, events and
/// modules made for a Context keep a ContextRef: the Context (the retain) must
/// outlive them, but it may be moved.
class Context {
public:
  /// Retains device `ordinal`'s primary context, through Driver::get().
  static kvarn::Expected<Context> create(int ordinal = 0);

  Context(Context &&other) noexcept;
  Context &operator=(Context &&other) noexcept;
  Context(const Context &) = delete;
  Context &operator=(const Context &) = delete;
  ~Context();

  const Driver &driver() const { return *drv; }
  CUcontext handle() const { return context; }
  CUdevice device() const { return dev; }
  const DeviceInfo &info() const { return deviceInfo; }
  ContextRef ref() const { return ContextRef(drv, context); }
  operator ContextRef() const { return ref(); }

  /// Makes this context current on the calling thread for the scope.
  kvarn::Expected<ScopedContext> enter() const {
    return ScopedContext::enter(*drv, context);
  }

  /// Waits for all work in this context (cuCtxSynchronize).
  kvarn::Error synchronize() const;

  /// cuMemGetInfo: bytes free and in total on the device.
  struct MemoryInfo {
    int64_t freeBytes = 0;
    int64_t totalBytes = 0;
  };
  kvarn::Expected<MemoryInfo> memoryInfo() const;

private:
  Context() = default;
  void release();

  const Driver *drv = nullptr;
  CUdevice dev = 0;
  CUcontext context = nullptr;
  DeviceInfo deviceInfo;
};

/// Queries device `ordinal` without retaining its context.
kvarn::Expected<DeviceInfo> queryDevice(const Driver &driver, int ordinal);

} // namespace kvarn::cuda

#endif // KVARN_RUNTIME_CONTEXT_H
