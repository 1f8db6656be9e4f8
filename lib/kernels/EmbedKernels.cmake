cmake_minimum_required(VERSION 3.20)
# Writes the .kvt kernel library as C++ table rows (included by
# lib/DSL/KernelLibrary.cpp), so the binary never reads kernel files.
#   cmake -DSOURCE_DIR=... -DKERNELS=a,b -DMLA_KERNELS=c -DMODULES=d
#         -DOUTPUT=... -P EmbedKernels.cmake
string(REPLACE "," ";" KERNELS "${KERNELS}")
string(REPLACE "," ";" MLA_KERNELS "${MLA_KERNELS}")
string(REPLACE "," ";" MODULES "${MODULES}")
set(content "// Generated from lib/kernels/*.kvt by EmbedKernels.cmake; do not edit.\n")
foreach(kind KERNELS MLA_KERNELS MODULES)
  if(kind STREQUAL "KERNELS")
    set(is_kernel "true, KernelFamily::Dense")
  elseif(kind STREQUAL "MLA_KERNELS")
    set(is_kernel "true, KernelFamily::Mla")
  else()
    set(is_kernel "false, KernelFamily::Dense")
  endif()
  foreach(name ${${kind}})
    file(READ "${SOURCE_DIR}/${name}.kvt" text)
    string(FIND "${text}" ")kvtsrc\"" clash)
    if(NOT clash EQUAL -1)
      message(FATAL_ERROR "${name}.kvt contains the raw-string delimiter )kvtsrc\"")
    endif()
    string(APPEND content
      "{\"${name}\", \"${name}.kvt\", R\"kvtsrc(${text})kvtsrc\", ${is_kernel}},\n")
  endforeach()
endforeach()
# Only touch the output when it changes, so edits elsewhere rebuild nothing.
if(EXISTS "${OUTPUT}")
  file(READ "${OUTPUT}" old)
endif()
if(NOT old STREQUAL content)
  file(WRITE "${OUTPUT}" "${content}")
endif()
