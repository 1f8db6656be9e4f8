#!/bin/sh
# Prints a kvt kernel of $1 scalar stores (p[i] = 1.0, one after another):
# each becomes an scf.if on thread 0, all in one block.
echo 'func.func @k(%arg0: !kvt.ptr<f32> {kvt.name = "p"}, %arg1: i32 {kvt.name = "n"}) attributes {kvt.grid = ["n"], kvt.kernel, kvt.spec = #kvt.spec<"kvarn_k4v2_g128", head_dim = 128, gqa = 1>} {'
echo '  %cst = arith.constant 1.000000e+00 : f32'
seq 0 $(($1 - 1)) | sed 's/.*/  %c& = arith.constant & : i32\
  kvt.store %cst, %arg0[%c&] : !kvt.ptr<f32>, i32/'
echo '  return'
echo '}'
