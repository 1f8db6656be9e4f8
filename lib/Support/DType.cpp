//===- DType.cpp - the activation dtype of a kernel -----------------------===//

#include "kvarn/Support/DType.h"
#include "kvarn/Support/Error.h"

using namespace kvarn;

std::string_view kvarn::spell(DType dtype) {
  return dtype == DType::F16 ? "f16" : "bf16";
}

kvarn::Expected<DType> kvarn::parseDType(std::string_view text) {
  if (text == "f16")
    return DType::F16;
  if (text == "bf16")
    return DType::BF16;
  return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                   "unknown dtype '{0}' (dtypes: f16, bf16)", text);
}
