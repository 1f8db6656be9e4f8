//===- CAPI.cpp - the kvarn C API -----------------------------------------===//
//
// Every entry point validates its arguments, turns internal llvm::Errors into
// a status and a thread-local message, and never lets an error escape.
//
//===----------------------------------------------------------------------===//

#include "kvarn/kvarn.h"
#include "kvarn/Layout/RecordLayout.h"
#include "kvarn/Runtime/CudaDriver.h"
#include "kvarn/Support/Error.h"
#include "kvarn/Version.h"

#include <string>

using namespace kvarn;

static thread_local std::string lastError;

static kvarn_status_t fail(llvm::Error err) {
  return kvarn::consumeError(std::move(err), lastError);
}

static kvarn_status_t succeed() {
  lastError.clear();
  return KVARN_OK;
}

extern "C" {

const char *kvarn_version(void) { return KVARN_VERSION_STRING; }

const char *kvarn_status_string(kvarn_status_t status) {
  switch (status) {
#define KVARN_STATUS_CASE(name)                                                \
  case name:                                                                   \
    return #name;
    KVARN_STATUS_CASE(KVARN_OK)
    KVARN_STATUS_CASE(KVARN_ERROR_INVALID_ARGUMENT)
    KVARN_STATUS_CASE(KVARN_ERROR_UNKNOWN_PRESET)
    KVARN_STATUS_CASE(KVARN_ERROR_UNSUPPORTED_SHAPE)
    KVARN_STATUS_CASE(KVARN_ERROR_IO)
    KVARN_STATUS_CASE(KVARN_ERROR_CORRUPT_DATA)
    KVARN_STATUS_CASE(KVARN_ERROR_NO_DRIVER)
    KVARN_STATUS_CASE(KVARN_ERROR_NO_DEVICE)
    KVARN_STATUS_CASE(KVARN_ERROR_CUDA)
    KVARN_STATUS_CASE(KVARN_ERROR_COMPILE)
    KVARN_STATUS_CASE(KVARN_ERROR_OUT_OF_MEMORY)
    KVARN_STATUS_CASE(KVARN_ERROR_POOL_EXHAUSTED)
    KVARN_STATUS_CASE(KVARN_ERROR_UNKNOWN_REQUEST)
    KVARN_STATUS_CASE(KVARN_ERROR_UNSUPPORTED_TARGET)
    KVARN_STATUS_CASE(KVARN_ERROR_INTERNAL)
#undef KVARN_STATUS_CASE
  }
  return "KVARN_ERROR_UNKNOWN_STATUS";
}

const char *kvarn_last_error(void) { return lastError.c_str(); }

size_t kvarn_preset_count(void) { return allPresets().size(); }

const char *kvarn_preset_name(size_t index) {
  if (index >= allPresets().size())
    return nullptr;
  return allPresets()[index].name;
}

kvarn_status_t kvarn_record_layout(const char *preset, int32_t headDim,
                                   kvarn_record_layout_t *out) {
  if (!preset || !out)
    return fail(makeError(KVARN_ERROR_INVALID_ARGUMENT,
                          "kvarn_record_layout: preset and out must not be "
                          "null"));
  llvm::Expected<const Preset *> p = lookupPreset(preset);
  if (!p)
    return fail(p.takeError());
  llvm::Expected<RecordLayout> l = RecordLayout::get(**p, headDim);
  if (!l)
    return fail(l.takeError());
  *out = {l->headDim,       l->group,          l->keyBits,
          l->valueBits,     l->sinkhornIters,  l->kCodes,
          l->kScale,        l->kZero,          l->kTokenScale,
          l->vCodes,        l->vChannelScale,  l->vScale,
          l->vZero,         l->unalignedBytes, l->recordBytes};
  return succeed();
}

kvarn_status_t kvarn_cuda_available(int *device_count) {
  llvm::Expected<const cuda::Driver &> driver = cuda::Driver::get();
  if (!driver) {
    if (device_count)
      *device_count = 0;
    return fail(driver.takeError());
  }
  if (device_count)
    *device_count = driver->deviceCount();
  return succeed();
}

} // extern "C"
