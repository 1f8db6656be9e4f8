//===- DType.h - the activation dtype of a kernel ---------------*- C++ -*-===//
//
// A model's activations (q, the new tokens' K/V, attention outputs) are fp16
// or bf16. Kernels take and return them in that type and convert on load and
// store; the fp16 pool and the byte records do not change with it.
//
//===----------------------------------------------------------------------===//
#ifndef KVARN_SUPPORT_DTYPE_H
#define KVARN_SUPPORT_DTYPE_H

#include "kvarn/Support/Half.h"

#include "kvarn/Support/Error.h"
#include <string_view>

#include <cstdint>

namespace kvarn {

enum class DType { F16, BF16 };

/// "f16" or "bf16": the spelling of the CLI, the C API and the cache key.
std::string_view spell(DType dtype);

/// "f16" or "bf16"; anything else is KVARN_ERROR_INVALID_ARGUMENT naming the
/// value and the choices.
kvarn::Expected<DType> parseDType(std::string_view text);

/// The value of 16 bits of `dtype`.
inline float dtypeToFloat(uint16_t bits, DType dtype) {
  return dtype == DType::F16 ? halfToFloat(bits) : bfloat16ToFloat(bits);
}

/// `f` rounded to nearest even in `dtype`, as its 16 bits.
inline uint16_t floatToDType(float f, DType dtype) {
  return dtype == DType::F16 ? floatToHalf(f) : floatToBFloat16(f);
}

} // namespace kvarn

#endif // KVARN_SUPPORT_DTYPE_H
