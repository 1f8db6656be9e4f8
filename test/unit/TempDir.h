//===- TempDir.h - a fresh directory for one test ---------------*- C++ -*-===//
#ifndef KVARN_TEST_TEMPDIR_H
#define KVARN_TEST_TEMPDIR_H

#include "llvm/ADT/SmallString.h"
#include "llvm/Support/FileSystem.h"

#include <gtest/gtest.h>

#include <string>

namespace kvarn::test {

/// A fresh directory under the system's temporary one, named after
/// `prefix`, removed with everything in it afterwards.
class TempDir {
public:
  explicit TempDir(const char *prefix = "kvarn-test") {
    llvm::SmallString<128> p;
    EXPECT_FALSE(llvm::sys::fs::createUniqueDirectory(prefix, p));
    path = p.str().str();
  }
  ~TempDir() { llvm::sys::fs::remove_directories(path); }
  TempDir(const TempDir &) = delete;
  TempDir &operator=(const TempDir &) = delete;
  std::string path;
};

} // namespace kvarn::test

#endif // KVARN_TEST_TEMPDIR_H
