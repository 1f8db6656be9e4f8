//===- Memory.cpp - device buffers, streams and events --------------------===//

#include "kvarn/Runtime/Memory.h"

#include "Internal.h"

#include <utility>

using namespace kvarn;
using namespace kvarn::cuda;


// Move assignment swaps, so the moved-from object releases what this one
// held when it is destroyed.

//===----------------------------------------------------------------------===//
// Stream
//===----------------------------------------------------------------------===//

kvarn::Expected<Stream> Stream::create(const Context &context) {
  KVARN_ENTER_CONTEXT(context);
  Stream s;
  s.ctx = context.ref();
  if (kvarn::Error err = KVARN_CUDA_CHECK(context.driver(), cuStreamCreate,
                                          &s.stream, CU_STREAM_NON_BLOCKING))
    return std::move(err);
  return std::move(s);
}

Stream &Stream::operator=(Stream &&other) noexcept {
  std::swap(ctx, other.ctx);
  std::swap(stream, other.stream);
  return *this;
}

Stream::~Stream() {
  if (!stream)
    return;
  releaseInContext(ctx, ctx.driver().api().cuStreamDestroy, stream);
  stream = nullptr;
}

kvarn::Error Stream::synchronize() const {
  KVARN_ENTER_CONTEXT(ctx);
  return KVARN_CUDA_CHECK(ctx.driver(), cuStreamSynchronize, stream);
}

//===----------------------------------------------------------------------===//
// Event
//===----------------------------------------------------------------------===//

kvarn::Expected<Event> Event::create(const Context &context) {
  KVARN_ENTER_CONTEXT(context);
  Event e;
  e.ctx = context.ref();
  if (kvarn::Error err = KVARN_CUDA_CHECK(context.driver(), cuEventCreate,
                                          &e.event, CU_EVENT_DEFAULT))
    return std::move(err);
  return std::move(e);
}

Event &Event::operator=(Event &&other) noexcept {
  std::swap(ctx, other.ctx);
  std::swap(event, other.event);
  return *this;
}

Event::~Event() {
  if (!event)
    return;
  releaseInContext(ctx, ctx.driver().api().cuEventDestroy, event);
  event = nullptr;
}

kvarn::Error Event::record(CUstream stream) const {
  KVARN_ENTER_CONTEXT(ctx);
  return KVARN_CUDA_CHECK(ctx.driver(), cuEventRecord, event, stream);
}

kvarn::Error Event::synchronize() const {
  KVARN_ENTER_CONTEXT(ctx);
  return KVARN_CUDA_CHECK(ctx.driver(), cuEventSynchronize, event);
}

kvarn::Expected<float> Event::elapsedMilliseconds(const Event &start,
                                                  const Event &end) {
  KVARN_ENTER_CONTEXT(start.ctx);
  float ms = 0;
  if (kvarn::Error err = KVARN_CUDA_CHECK(
          start.ctx.driver(), cuEventElapsedTime, &ms, start.event, end.event))
    return std::move(err);
  return ms;
}

//===----------------------------------------------------------------------===//
// DeviceBuffer
//===----------------------------------------------------------------------===//

kvarn::Expected<DeviceBuffer> DeviceBuffer::allocate(const Context &context,
                                                     size_t bytes) {
  DeviceBuffer buffer;
  buffer.ctx = context.ref();
  if (bytes == 0)
    return std::move(buffer);
  KVARN_ENTER_CONTEXT(context);
  if (kvarn::Error err = KVARN_CUDA_CHECK(context.driver(), cuMemAlloc,
                                          &buffer.pointer, bytes))
    return withContext(std::move(err), format("allocating {0} bytes on GPU {1}",
                                              bytes, context.info().ordinal));
  buffer.bytes = bytes;
  return std::move(buffer);
}

DeviceBuffer &DeviceBuffer::operator=(DeviceBuffer &&other) noexcept {
  std::swap(ctx, other.ctx);
  std::swap(pointer, other.pointer);
  std::swap(bytes, other.bytes);
  return *this;
}

DeviceBuffer::~DeviceBuffer() {
  if (!pointer)
    return;
  releaseInContext(ctx, ctx.driver().api().cuMemFree, pointer);
  pointer = 0;
}

kvarn::Error DeviceBuffer::checkRange(std::string_view what, size_t offset,
                                      size_t count) const {
  if (offset > bytes || count > bytes - offset)
    return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                     "DeviceBuffer::{0}: {1} bytes at offset {2} overrun a "
                     "{3}-byte buffer",
                     what, count, offset, bytes);
  return kvarn::Error::success();
}

kvarn::Error DeviceBuffer::checkFillWidth(size_t width) const {
  if (bytes % width)
    return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                     "DeviceBuffer::fill{0}: a {1}-byte buffer is not a "
                     "multiple of {2} bytes",
                     width * 8, bytes, width);
  return kvarn::Error::success();
}

kvarn::Error DeviceBuffer::upload(const void *host, size_t count,
                                  size_t offset) {
  if (kvarn::Error err = checkRange("upload", offset, count))
    return err;
  if (count == 0)
    return kvarn::Error::success();
  KVARN_ENTER_CONTEXT(ctx);
  return KVARN_CUDA_CHECK(ctx.driver(), cuMemcpyHtoD, pointer + offset, host,
                          count);
}

kvarn::Error DeviceBuffer::download(void *host, size_t count,
                                    size_t offset) const {
  if (kvarn::Error err = checkRange("download", offset, count))
    return err;
  if (count == 0)
    return kvarn::Error::success();
  KVARN_ENTER_CONTEXT(ctx);
  return KVARN_CUDA_CHECK(ctx.driver(), cuMemcpyDtoH, host, pointer + offset,
                          count);
}

kvarn::Error DeviceBuffer::copyFrom(const DeviceBuffer &source, size_t count) {
  if (kvarn::Error err = checkRange("copyFrom", 0, count))
    return err;
  if (kvarn::Error err = source.checkRange("copyFrom (source)", 0, count))
    return err;
  if (count == 0)
    return kvarn::Error::success();
  KVARN_ENTER_CONTEXT(ctx);
  return KVARN_CUDA_CHECK(ctx.driver(), cuMemcpyDtoD, pointer, source.pointer,
                          count);
}

kvarn::Error DeviceBuffer::uploadAsync(const void *host, size_t count,
                                       CUstream stream, size_t offset) {
  if (kvarn::Error err = checkRange("uploadAsync", offset, count))
    return err;
  if (count == 0)
    return kvarn::Error::success();
  KVARN_ENTER_CONTEXT(ctx);
  return KVARN_CUDA_CHECK(ctx.driver(), cuMemcpyHtoDAsync, pointer + offset,
                          host, count, stream);
}

kvarn::Error DeviceBuffer::downloadAsync(void *host, size_t count,
                                         CUstream stream, size_t offset) const {
  if (kvarn::Error err = checkRange("downloadAsync", offset, count))
    return err;
  if (count == 0)
    return kvarn::Error::success();
  KVARN_ENTER_CONTEXT(ctx);
  return KVARN_CUDA_CHECK(ctx.driver(), cuMemcpyDtoHAsync, host,
                          pointer + offset, count, stream);
}

kvarn::Error DeviceBuffer::copyFromAsync(const DeviceBuffer &source,
                                         size_t count, CUstream stream) {
  if (kvarn::Error err = checkRange("copyFromAsync", 0, count))
    return err;
  if (kvarn::Error err = source.checkRange("copyFromAsync (source)", 0, count))
    return err;
  if (count == 0)
    return kvarn::Error::success();
  KVARN_ENTER_CONTEXT(ctx);
  return KVARN_CUDA_CHECK(ctx.driver(), cuMemcpyDtoDAsync, pointer,
                          source.pointer, count, stream);
}

// The fills: a width check, then one cuMemsetD{8,16,32}[Async] over the
// whole buffer, whose count is in elements of the pattern's width.
#define KVARN_DEFINE_FILL(bits, type)                                          \
  kvarn::Error DeviceBuffer::fill##bits(type value) {                          \
    if (kvarn::Error err = checkFillWidth(bits / 8))                           \
      return err;                                                              \
    if (bytes == 0)                                                            \
      return kvarn::Error::success();                                          \
    KVARN_ENTER_CONTEXT(ctx);                                                  \
    return KVARN_CUDA_CHECK(ctx.driver(), cuMemsetD##bits, pointer, value,     \
                            bytes / (bits / 8));                               \
  }                                                                            \
  kvarn::Error DeviceBuffer::fill##bits##Async(type value, CUstream stream) {  \
    if (kvarn::Error err = checkFillWidth(bits / 8))                           \
      return err;                                                              \
    if (bytes == 0)                                                            \
      return kvarn::Error::success();                                          \
    KVARN_ENTER_CONTEXT(ctx);                                                  \
    return KVARN_CUDA_CHECK(ctx.driver(), cuMemsetD##bits##Async, pointer,     \
                            value, bytes / (bits / 8), stream);                \
  }
KVARN_DEFINE_FILL(8, uint8_t)
KVARN_DEFINE_FILL(16, uint16_t)
KVARN_DEFINE_FILL(32, uint32_t)
#undef KVARN_DEFINE_FILL
