//===- kvarn-jit.cpp - the kvarn command line -----------------------------===//
//
//   kvarn-jit ref flush  --case DIR --out FILE   CPU reference records
//   kvarn-jit ref decode --case DIR --out FILE   CPU reference attention
//   kvarn-jit devices                            the CUDA driver and GPUs
//
// Every error is one line on stderr and a non-zero exit status.
//
//===----------------------------------------------------------------------===//

#include "kvarn/Golden/Compare.h"
#include "kvarn/Golden/GoldenCase.h"
#include "kvarn/Golden/ReferenceOnCase.h"
#include "kvarn/Runtime/Context.h"
#include "kvarn/Runtime/PtxAssembler.h"
#include "kvarn/Support/Error.h"
#include "kvarn/Version.h"

#include "llvm/ADT/StringMap.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/raw_ostream.h"

#include <cstring>
#include <functional>
#include <string>
#include <vector>

using namespace kvarn;

namespace {

/// Exit statuses: 0 success, 1 a failure while working, 2 bad usage.
enum ExitCode { kExitOk = 0, kExitFailure = 1, kExitUsage = 2 };

/// `--name VALUE` options of one subcommand.
struct Options {
  llvm::StringMap<std::string> values;
  std::string get(llvm::StringRef name) const {
    auto it = values.find(name);
    return it == values.end() ? std::string() : it->second;
  }
};

struct Subcommand {
  const char *path; // "ref flush"
  const char *summary;
  std::vector<std::pair<const char *, const char *>> options; // name, help
  std::function<int(const Options &)> run;
};

int usageError(const llvm::Twine &message) {
  llvm::errs() << "kvarn-jit: error: " << message
               << " (see kvarn-jit --help)\n";
  return kExitUsage;
}

int failure(llvm::Error err) {
  std::string message;
  kvarn_status_t status = kvarn::consumeError(std::move(err), message);
  (void)status;
  llvm::outs().flush(); // what was printed before the error comes first
  llvm::errs() << "kvarn-jit: error: " << message << "\n";
  return kExitFailure;
}

llvm::Expected<GoldenCase> loadCaseOption(const Options &opts) {
  std::string dir = opts.get("case");
  return GoldenCase::load(dir);
}

int runRefFlush(const Options &opts) {
  llvm::Expected<GoldenCase> c = loadCaseOption(opts);
  if (!c)
    return failure(c.takeError());
  if (llvm::Error err = c->checkLayout())
    return failure(std::move(err));
  llvm::Expected<std::vector<uint8_t>> records = referenceFlush(*c);
  if (!records)
    return failure(records.takeError());
  if (llvm::Error err = writeBinaryFile(opts.get("out"), records->data(),
                                        records->size()))
    return failure(std::move(err));
  const RecordLayout &l = c->recordLayout();
  int64_t tiles = int64_t(records->size()) / l.recordBytes;
  llvm::outs() << llvm::formatv("ref flush: {0} tiles of {1} head_dim {2}, "
                                "{3} B per record -> {4}",
                                tiles, c->presetName(), l.headDim,
                                l.recordBytes, opts.get("out"));
  // Where the case carries the public reference's records, say how close.
  llvm::Expected<Tensor> expected = c->tensor("records_ref", "uint8", 2);
  if (expected) {
    if (int64_t(expected->bytes.size()) != int64_t(records->size()))
      return failure(makeError(KVARN_ERROR_CORRUPT_DATA,
                               "records_ref holds {0} bytes, expected {1}",
                               expected->bytes.size(), records->size()));
    RecordComparison cmp = compareRecords(l, records->data(),
                                          expected->bytes.data(), tiles);
    llvm::outs() << llvm::formatv(
        "; vs records_ref: codes equal {0:P3}, max code step {1}, worst tile "
        "dequantized rel L2 K {2:e2} V {3:e2}, bytes equal {4:P3}",
        cmp.codeAgreement(), cmp.maxCodeStep, cmp.maxKRelL2, cmp.maxVRelL2,
        cmp.byteAgreement());
  } else {
    llvm::consumeError(expected.takeError());
  }
  llvm::outs() << "\n";
  return kExitOk;
}

int runRefDecode(const Options &opts) {
  llvm::Expected<GoldenCase> c = loadCaseOption(opts);
  if (!c)
    return failure(c.takeError());
  if (llvm::Error err = c->checkLayout())
    return failure(std::move(err));
  DecodeShape shape;
  llvm::Expected<std::vector<float>> out = referenceDecode(*c, &shape);
  if (!out)
    return failure(out.takeError());
  if (llvm::Error err = writeBinaryFile(opts.get("out"), out->data(),
                                        out->size() * sizeof(float)))
    return failure(std::move(err));
  llvm::outs() << llvm::formatv("ref decode: batch {0}, {1} query heads, "
                                "head_dim {2}, {3} -> {4}",
                                shape.batch, shape.numQHeads, shape.headDim,
                                c->presetName(), opts.get("out"));
  for (const char *name : {"out_exact", "out_unquantized"}) {
    llvm::Expected<Tensor> t = c->tensor(name, "float32");
    if (!t) {
      llvm::consumeError(t.takeError());
      continue;
    }
    if (t->bytes.size() != out->size() * sizeof(float))
      return failure(makeError(KVARN_ERROR_CORRUPT_DATA,
                               "{0} has {1} bytes, expected {2}", name,
                               t->bytes.size(), out->size() * sizeof(float)));
    llvm::outs() << llvm::formatv("; rel L2 vs {0} {1:e2}", name,
                                  relativeL2(out->data(), t->as<float>(),
                                             out->size()));
  }
  llvm::outs() << "\n";
  return kExitOk;
}

/// The driver, its GPUs and the ptxas kvarn would use; fails (exit 1) with
/// the driver loader's message where kernels cannot run.
int runDevices(const Options &) {
  llvm::Expected<std::string> ptxas = cuda::findPtxas();
  llvm::outs() << "ptxas: "
               << (ptxas ? *ptxas : "none (" + toString(ptxas.takeError()) + ")")
               << "\n";
  llvm::Expected<const cuda::Driver &> driver = cuda::Driver::get();
  if (!driver)
    return failure(driver.takeError());
  int version = driver->version();
  llvm::outs() << llvm::formatv("CUDA driver {0}.{1} ({2}), {3} GPU(s)\n",
                                version / 1000, version % 1000 / 10,
                                driver->libraryPath(), driver->deviceCount());
  for (int ordinal = 0; ordinal < driver->deviceCount(); ++ordinal) {
    llvm::Expected<cuda::DeviceInfo> info = cuda::queryDevice(*driver, ordinal);
    if (!info)
      return failure(info.takeError());
    llvm::outs() << llvm::formatv(
        "  GPU {0}: {1}, {2}, {3} SMs, {4:f1} GiB, {5} KiB shared per block "
        "(opt-in), {6} MiB L2\n",
        ordinal, info->name, info->arch(), info->multiprocessors,
        double(info->totalMemoryBytes) / (1u << 30),
        info->maxSharedBytesPerBlockOptin / 1024, info->l2CacheBytes >> 20);
  }
  return kExitOk;
}

std::vector<Subcommand> subcommands() {
  std::vector<std::pair<const char *, const char *>> caseOptions = {
      {"case", "a golden-format case directory (case.json + binaries)"},
      {"out", "the output file (raw little-endian bytes)"}};
  return {
      {"ref flush",
       "quantize a flush case's k_rot/v_rot tiles with the CPU reference; "
       "writes records [tiles, record_bytes]",
       caseOptions, runRefFlush},
      {"ref decode",
       "attend over a decode case's paged cache with the CPU reference; "
       "writes fp32 [B, Hq, D]",
       caseOptions, runRefDecode},
      {"devices",
       "report the CUDA driver, the GPUs and ptxas; exit 1 when kernels "
       "cannot run here",
       {}, runDevices},
  };
}

void printHelp(const std::vector<Subcommand> &subs, const Subcommand *only) {
  llvm::raw_ostream &os = llvm::outs();
  if (!only) {
    os << "kvarn-jit " << KVARN_VERSION_STRING
       << ": JIT kernel generator for KVarN-quantized KV caches\n\n"
          "usage: kvarn-jit <command> [options]\n\ncommands:\n";
    for (const Subcommand &s : subs)
      os << llvm::formatv("  {0,-12} {1}\n", s.path, s.summary);
    os << "\n  --help       this text; `kvarn-jit <command> --help` for a "
          "command\n  --version    the version\n";
    return;
  }
  os << "usage: kvarn-jit " << only->path;
  for (auto &[name, help] : only->options)
    os << " --" << name << " VALUE";
  os << "\n\n" << only->summary << "\n\noptions:\n";
  for (auto &[name, help] : only->options)
    os << llvm::formatv("  --{0,-10} {1}\n", name, help);
}

} // namespace

int main(int argc, char **argv) {
  std::vector<Subcommand> subs = subcommands();
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty() || args[0] == "--help" || args[0] == "-h") {
    printHelp(subs, nullptr);
    return args.empty() ? kExitUsage : kExitOk;
  }
  if (args[0] == "--version") {
    llvm::outs() << "kvarn-jit " << KVARN_VERSION_STRING << " (LLVM "
                 << KVARN_LLVM_VERSION_STRING << ")\n";
    return kExitOk;
  }

  // The longest subcommand path that prefixes the arguments.
  const Subcommand *sub = nullptr;
  size_t consumed = 0;
  for (const Subcommand &s : subs) {
    llvm::SmallVector<llvm::StringRef, 2> words;
    llvm::StringRef(s.path).split(words, ' ');
    if (words.size() > args.size())
      continue;
    bool match = true;
    for (size_t i = 0; i < words.size(); ++i)
      match &= args[i] == words[i];
    if (match && words.size() > consumed) {
      sub = &s;
      consumed = words.size();
    }
  }
  if (!sub) {
    std::string cmd = args[0] + (args.size() > 1 && args[1][0] != '-'
                                     ? " " + args[1]
                                     : std::string());
    return usageError("unknown command '" + cmd + "'");
  }

  Options opts;
  for (size_t i = consumed; i < args.size(); ++i) {
    llvm::StringRef arg = args[i];
    if (arg == "--help" || arg == "-h") {
      printHelp(subs, sub);
      return kExitOk;
    }
    if (!arg.starts_with("--"))
      return usageError(llvm::Twine("unexpected argument '") + arg + "' for '" +
                        sub->path + "'");
    llvm::StringRef name = arg.drop_front(2), value;
    bool inlineValue = false;
    if (name.contains('=')) {
      std::tie(name, value) = name.split('=');
      inlineValue = true;
    }
    bool known = false;
    for (auto &[optName, help] : sub->options)
      known |= name == optName;
    if (!known)
      return usageError(llvm::Twine("unknown option '--") + name + "' for '" +
                        sub->path + "'");
    if (!inlineValue) {
      if (i + 1 >= args.size())
        return usageError(llvm::Twine("option '--") + name + "' needs a value");
      value = args[++i];
    }
    if (value.empty())
      return usageError(llvm::Twine("option '--") + name + "' needs a value");
    opts.values[name] = value.str();
  }
  for (auto &[name, help] : sub->options)
    if (!opts.values.count(name))
      return usageError(llvm::Twine("'") + sub->path + "' needs --" + name);
  return sub->run(opts);
}
