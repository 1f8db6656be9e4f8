//===- KVTAttrs.td --- kvt attributes ----------------------*- tablegen -*-===//
#ifndef KVARN_DIALECT_KVT_ATTRS_TD
#define KVARN_DIALECT_KVT_ATTRS_TD

include "KVTDialect.td"
include "mlir/IR/AttrTypeBase.td"
include "mlir/IR/EnumAttr.td"

def KVT_SpecAttr : AttrDef<KVT_Dialect, "Spec"> {
  let mnemonic = "spec";
  let summary = "the specialization a kernel was built for";
  let description = [{
    The preset and shape bound into a kernel:
    `#kvt.spec<"kvarn_k4v2_g128", head_dim = 128, gqa = 4>`. The preset's
    fields (group, key and value bits, Sinkhorn iterations) and the record
    layout follow from the name and head_dim through kvarn's one layout
    table; the verifier rejects unknown presets and unsupported head dims.

    An MLA preset (docs/kvarn.md, "MLA records") caches one latent per
    token: its head_dim is the latent's width (kv_lora_rank), `rope_dim`
    the width of the fp16 rope key beside it and gqa the query heads that
    attend to the one latent:
    `#kvt.spec<"kvarn_mla_k4_g128", head_dim = 512, gqa = 16, rope_dim = 64>`.
    Dense presets have no rope_dim.
  }];
  let parameters = (ins StringRefParameter<"preset name">:$preset,
                        "int64_t":$headDim,
                        "int64_t":$gqa,
                        DefaultValuedParameter<"int64_t", "0">:$ropeDim);
  let assemblyFormat = [{
    `<` $preset `,` `head_dim` `=` $headDim `,` `gqa` `=` $gqa
    (`,` `rope_dim` `=` $ropeDim^)? `>`
  }];
  let genVerifyDecl = 1;
  let extraClassDeclaration = [{
    /// Whether the preset is an MLA preset (its records are
    /// MlaRecordLayout's).
    bool isMla() const;
    /// The record format of this preset at this head_dim (and rope_dim),
    /// verified to exist.
    kvarn::kvt::RecordFormat getRecordFormat() const;
  }];
}

def KVT_RecordField : I32EnumAttr<"RecordField", "a field of a KVarN record", [
    I32EnumAttrCase<"KCodes", 0, "k_codes">,
    I32EnumAttrCase<"KScale", 1, "k_scale">,
    I32EnumAttrCase<"KZero", 2, "k_zero">,
    I32EnumAttrCase<"KTokenScale", 3, "k_token_scale">,
    I32EnumAttrCase<"VCodes", 4, "v_codes">,
    I32EnumAttrCase<"VChannelScale", 5, "v_channel_scale">,
    I32EnumAttrCase<"VScale", 6, "v_scale">,
    I32EnumAttrCase<"VZero", 7, "v_zero">,
    // MLA records (MlaRecordLayout).
    I32EnumAttrCase<"LatentCodes", 8, "latent_codes">,
    I32EnumAttrCase<"LatentScale", 9, "latent_scale">,
    I32EnumAttrCase<"LatentZero", 10, "latent_zero">,
    I32EnumAttrCase<"LatentTokenScale", 11, "latent_token_scale">,
    I32EnumAttrCase<"Rope", 12, "rope">]> {
  let cppNamespace = "::kvarn::kvt";
  let genSpecializedAttr = 0;
}

def KVT_RecordFieldAttr : EnumAttr<KVT_Dialect, KVT_RecordField, "field"> {
  let assemblyFormat = "`<` $value `>`";
}

#endif // KVARN_DIALECT_KVT_ATTRS_TD
