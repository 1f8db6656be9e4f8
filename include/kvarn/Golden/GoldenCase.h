//===- GoldenCase.h - reader for golden-format cases ------------*- C++ -*-===//
//
// A golden case is a folder with `case.json` (parameters, record offsets and
// a `tensors` table of {file, dtype, shape}) and raw little-endian binaries,
// as produced from the public reference (docs/kvarn.md, "Golden data"). Every
// malformed input is an error, never a crash.
//
//===----------------------------------------------------------------------===//
#ifndef KVARN_GOLDEN_GOLDENCASE_H
#define KVARN_GOLDEN_GOLDENCASE_H

#include "kvarn/Layout/RecordLayout.h"

#include "llvm/ADT/StringRef.h"
#include "llvm/Support/Error.h"
#include "llvm/Support/JSON.h"

#include <cstdint>
#include <string>
#include <vector>

namespace kvarn {

struct Tensor {
  std::string name;
  std::string dtype; // "float16", "float32", "int32", "uint8"
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;

  int64_t numElements() const;
  template <typename T> const T *as() const {
    return reinterpret_cast<const T *>(bytes.data());
  }
};

/// Size in bytes of one element of a golden dtype, or 0 if unknown.
int dtypeSize(llvm::StringRef dtype);

class GoldenCase {
public:
  /// Reads and checks `dir/case.json`; tensors are read on demand.
  static kvarn::Expected<GoldenCase> load(llvm::StringRef dir);

  const std::string &dir() const { return directory; }
  const std::string &kind() const { return caseKind; } // "flush" or "decode"
  const std::string &presetName() const { return preset; }
  int headDim() const { return layout.headDim; }
  const RecordLayout &recordLayout() const { return layout; }
  const llvm::json::Object &json() const { return root; }

  /// A tensor, checked: dtype as expected, rank as expected (-1: any), file
  /// size equal to the shape's.
  kvarn::Expected<Tensor> tensor(llvm::StringRef name, llvm::StringRef dtype,
                                 int rank = -1) const;

  /// Integer / float parameters of case.json.
  kvarn::Expected<int64_t> getInt(llvm::StringRef key) const;
  kvarn::Expected<double> getNumber(llvm::StringRef key) const;

  /// Checks case.json's `offsets` and tile sizes against `layout`.
  kvarn::Error checkLayout() const;

private:
  std::string directory;
  std::string caseKind;
  std::string preset;
  RecordLayout layout;
  llvm::json::Object root;
};

/// Writes `bytes` to `path` (raw), with an error naming the path on failure.
kvarn::Error writeBinaryFile(llvm::StringRef path, const void *data,
                             size_t size);

} // namespace kvarn

#endif // KVARN_GOLDEN_GOLDENCASE_H
