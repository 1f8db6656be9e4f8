//===- KVTTypes.td --- kvt types ---------------------------*- tablegen -*-===//
#ifndef KVARN_DIALECT_KVT_TYPES_TD
#define KVARN_DIALECT_KVT_TYPES_TD

include "KVTDialect.td"
include "mlir/IR/AttrTypeBase.td"
include "mlir/IR/BuiltinTypeInterfaces.td"

class KVT_Type<string name, string typeMnemonic, list<Trait> traits = []>
    : TypeDef<KVT_Dialect, name, traits> {
  let mnemonic = typeMnemonic;
}

def KVT_TileType : KVT_Type<"Tile", "tile"> {
  let summary = "a statically shaped tile of values";
  let description = [{
    A rank-1 or rank-2 tile with a static shape, e.g. `!kvt.tile<128x128xf32>`
    or `!kvt.tile<64xf16>`. Element types: f16, bf16, f32, i8 (codes and
    packed bytes), i32.
  }];
  let parameters = (ins ArrayRefParameter<"int64_t">:$shape,
                        "mlir::Type":$elementType);
  let hasCustomAssemblyFormat = 1;
  let genVerifyDecl = 1;
  let builders = [
    TypeBuilderWithInferredContext<(ins "llvm::ArrayRef<int64_t>":$shape,
                                        "mlir::Type":$elementType), [{
      return $_get(elementType.getContext(), shape, elementType);
    }]>
  ];
  let extraClassDeclaration = [{
    int64_t getRank() const { return getShape().size(); }
    int64_t getNumElements() const;
    int64_t getDim(unsigned i) const { return getShape()[i]; }
    TileType cloneWith(mlir::Type elementType) const {
      return TileType::get(getShape(), elementType);
    }
  }];
}

def KVT_PointerType : KVT_Type<"Pointer", "ptr"> {
  let summary = "a global-memory pointer to elements of one type";
  let description = [{
    A kernel argument pointing to global memory: `!kvt.ptr<f16>`. It lowers to
    `!llvm.ptr<1>`, one `.u64 .ptr .global` PTX parameter, as Triton's are.
  }];
  let parameters = (ins "mlir::Type":$pointeeType);
  let assemblyFormat = "`<` $pointeeType `>`";
}

#endif // KVARN_DIALECT_KVT_TYPES_TD
