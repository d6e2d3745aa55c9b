// DLPack arrays (nb::ndarray: NumPy, PyTorch CPU and CUDA tensors) as sp::tensor_view, without
// copies. The arrays are taken unconstrained so nanobind never converts (copies) them; every
// check is done here and fails with an sp::error naming the Python function, the argument and
// the offending dtype, shape, stride or device.
#pragma once

#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>

#include <cstdint>
#include <string>

#include "shareprefill/tensor.h"

namespace sp_python {

namespace nb = nanobind;

// Inputs may be read-only (a NumPy view, a tensor that does not require a copy to export).
using input_array = nb::ndarray<nb::ro>;
using output_array = nb::ndarray<>;

enum class array_device { cpu, cuda };

struct array_info {
  sp::tensor_view view;
  array_device device = array_device::cpu;
  int32_t device_id = 0;
};

// The dtype name as NumPy/PyTorch spell it ("float32", "bfloat16", "int64", ...).
std::string dtype_name(nb::dlpack::dtype t);

// Views an array of the given rank and dtype f32/f16/bf16 on the CPU or a CUDA device.
// fn: the Python function for messages ("shareprefill.attention"); name: the argument ("q").
array_info view_input(const char* fn, const char* name, const input_array& a, int rank);
array_info view_output(const char* fn, const char* name, const output_array& a, int rank);

// The array must be C-contiguous (what the CPU kernels and the planner read).
void require_contiguous(const char* fn, const char* name, const array_info& a);

// The array must be float32.
void require_f32(const char* fn, const char* name, const array_info& a);

// Both arrays live on the same device (type and index).
void require_same_device(const char* fn, const char* name_a, const array_info& a,
                         const char* name_b, const array_info& b);

// Shape as "(2, 3, 4)" for messages.
std::string shape_string(const sp::tensor_view& v);

}  // namespace sp_python
