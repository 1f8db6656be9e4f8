//===- KVTDialect.td ---- the kvt dialect ------------------*- tablegen -*-===//
#ifndef KVARN_DIALECT_KVT_DIALECT_TD
#define KVARN_DIALECT_KVT_DIALECT_TD

include "mlir/IR/OpBase.td"

def KVT_Dialect : Dialect {
  let name = "kvt";
  let cppNamespace = "::kvarn::kvt";
  let summary = "Tile-level operations of KVarN: rotate, normalize, quantize, attend";
  let description = [{
    The `kvt` dialect is what the `.kvt` DSL parses into. Its values are
    whole tiles (`!kvt.tile<128x128xf32>`) with value semantics; its ops are
    the primitives of KVarN on a tile (Hadamard rotation, Sinkhorn-like
    normalization, round-to-nearest quantization, packing, online-softmax
    attention over one block) plus loads and stores of tiles and of record
    fields. Scalar arithmetic and control flow are upstream `arith` and `scf`.

    A kernel is a `func.func` carrying `kvt.kernel` and a `kvt.spec`
    attribute: the preset and head_dim it was specialized for. Shapes are
    static: the front end binds the DSL's constants (D, G, KBITS, ...) from the
    specialization, the way Triton binds constexprs.
  }];
  let useDefaultTypePrinterParser = 1;
  let useDefaultAttributePrinterParser = 1;
  let extraClassDeclaration = [{
    void registerTypes();
    void registerAttributes();
    /// Attribute names used on kernel functions.
    static llvm::StringRef getKernelAttrName() { return "kvt.kernel"; }
    static llvm::StringRef getSpecAttrName() { return "kvt.spec"; }
  }];
}

class KVT_Op<string mnemonic, list<Trait> traits = []>
    : Op<KVT_Dialect, mnemonic, traits>;

#endif // KVARN_DIALECT_KVT_DIALECT_TD
