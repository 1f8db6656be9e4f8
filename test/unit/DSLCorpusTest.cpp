//===- DSLCorpusTest.cpp - malformed .kvt inputs stay diagnostics ---------===//
//
// test/data/dsl-corpus holds malformed inputs: hand-written ones for every
// error path and the inputs the fuzzer (test/fuzz) found crashing before
// they were fixed. Each must give at least one error diagnostic and a null
// module; a crash or hang fails this test.
//
//===----------------------------------------------------------------------===//

#include "EvalTestUtil.h"

#include "llvm/Support/FileSystem.h"
#include "llvm/Support/Path.h"

#include <gtest/gtest.h>

using namespace kvarn;
using namespace kvarn::test;

namespace {
std::vector<std::string> corpusFiles() {
  std::vector<std::string> files;
  std::error_code ec;
  for (llvm::sys::fs::directory_iterator it(KVARN_DSL_CORPUS_DIR, ec), end;
       it != end && !ec; it.increment(ec))
    files.push_back(it->path());
  std::sort(files.begin(), files.end());
  return files;
}

class MalformedInput : public ::testing::TestWithParam<std::string> {};
} // namespace

TEST_P(MalformedInput, IsADiagnosticNotACrash) {
  llvm::ErrorOr<std::unique_ptr<llvm::MemoryBuffer>> file =
      llvm::MemoryBuffer::getFile(GetParam());
  ASSERT_TRUE(bool(file)) << GetParam();
  dsl::Specialization spec;
  spec.gqa = 4;
  BuiltKernel k = buildFromSource((*file)->getBuffer(),
                                  llvm::sys::path::filename(GetParam()), "k", spec);
  EXPECT_FALSE(k.module) << "built without an error";
  EXPECT_NE(k.diagnostics.find(": error: "), std::string::npos)
      << "no error diagnostic; got: " << k.diagnostics;
}

// Without test/data/dsl-corpus (a tree packed without test data) the
// parameterized suite is empty: reported as a skip below, not a failure.
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(MalformedInput);

TEST(DSLCorpus, EveryFileIsReadable) {
  std::vector<std::string> files = corpusFiles();
  if (files.empty())
    GTEST_SKIP() << "no DSL corpus at " << KVARN_DSL_CORPUS_DIR;
  for (const std::string &f : files)
    EXPECT_TRUE(bool(llvm::MemoryBuffer::getFile(f))) << f;
}

INSTANTIATE_TEST_SUITE_P(Corpus, MalformedInput,
                         ::testing::ValuesIn(corpusFiles()),
                         [](const auto &info) {
                           std::string name =
                               llvm::sys::path::stem(info.param).str();
                           for (char &c : name)
                             if (!isalnum(static_cast<unsigned char>(c)))
                               c = '_';
                           return name;
                         });
