//===- Memory.h - device buffers, streams and events ------------*- C++ -*-===//
//
// Owning wrappers (move-only, released in the destructor) over device memory,
// streams and events of one Context, which must outlive them (see ContextRef).
// Every operation returns a kvarn::Error naming the driver call that failed.
//
//===----------------------------------------------------------------------===//
#ifndef KVARN_RUNTIME_MEMORY_H
#define KVARN_RUNTIME_MEMORY_H

#include "kvarn/Runtime/Context.h"

#include <cstddef>
#include <cstdint>

namespace kvarn::cuda {

/// A stream of the context (non-blocking with respect to the legacy default
/// stream). A caller's own CUstream works wherever a CUstream is taken.
class Stream {
public:
  static kvarn::Expected<Stream> create(const Context &context);
  Stream() = default;
  Stream(Stream &&other) noexcept { *this = std::move(other); }
  Stream &operator=(Stream &&other) noexcept;
  ~Stream();

  CUstream handle() const { return stream; }
  kvarn::Error synchronize() const;

private:
  ContextRef ctx;
  CUstream stream = nullptr;
};

/// A timing event.
class Event {
public:
  static kvarn::Expected<Event> create(const Context &context);
  Event() = default;
  Event(Event &&other) noexcept { *this = std::move(other); }
  Event &operator=(Event &&other) noexcept;
  ~Event();

  CUevent handle() const { return event; }
  kvarn::Error record(CUstream stream) const;
  kvarn::Error synchronize() const;
  /// Milliseconds between two recorded, completed events.
  static kvarn::Expected<float> elapsedMilliseconds(const Event &start,
                                                    const Event &end);

private:
  ContextRef ctx;
  CUevent event = nullptr;
};

/// Device memory of the context. Copies and fills check their ranges against
/// the buffer's size before calling the driver. The plain forms return when
/// the copy is done (fills: ordered on the legacy default stream, as
/// cuMemsetD* are); the *Async forms enqueue on `stream`.
class DeviceBuffer {
public:
  /// cuMemAlloc; `bytes` may be 0 (an empty buffer, no allocation).
  static kvarn::Expected<DeviceBuffer> allocate(const Context &context,
                                                size_t bytes);
  DeviceBuffer() = default;
  DeviceBuffer(DeviceBuffer &&other) noexcept { *this = std::move(other); }
  DeviceBuffer &operator=(DeviceBuffer &&other) noexcept;
  ~DeviceBuffer();

  CUdeviceptr address() const { return pointer; }
  size_t size() const { return bytes; }

  kvarn::Error upload(const void *host, size_t count, size_t offset = 0);
  kvarn::Error download(void *host, size_t count, size_t offset = 0) const;
  /// Copies `count` bytes of `source` (from its start) to this buffer's start.
  kvarn::Error copyFrom(const DeviceBuffer &source, size_t count);
  kvarn::Error uploadAsync(const void *host, size_t count, CUstream stream,
                           size_t offset = 0);
  kvarn::Error downloadAsync(void *host, size_t count, CUstream stream,
                             size_t offset = 0) const;
  kvarn::Error copyFromAsync(const DeviceBuffer &source, size_t count,
                             CUstream stream);

  /// Fill the whole buffer with a byte, a 16-bit or a 32-bit pattern (the
  /// buffer's size must be a multiple of the pattern's); the 16-bit form
  /// poisons fp16 outputs with NaN (0x7e00).
  kvarn::Error fill8(uint8_t value);
  kvarn::Error fill16(uint16_t value);
  kvarn::Error fill32(uint32_t value);
  kvarn::Error fill8Async(uint8_t value, CUstream stream);
  kvarn::Error fill16Async(uint16_t value, CUstream stream);
  kvarn::Error fill32Async(uint32_t value, CUstream stream);

private:
  kvarn::Error checkRange(std::string_view what, size_t offset,
                          size_t count) const;
  kvarn::Error checkFillWidth(size_t width) const;

  ContextRef ctx;
  CUdeviceptr pointer = 0;
  size_t bytes = 0;
};

} // namespace kvarn::cuda

#endif // KVARN_RUNTIME_MEMORY_H
