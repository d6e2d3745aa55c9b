// DLPack arrays as sp::tensor_view (arrays.h): dtype, rank, device and stride checks.
#include "arrays.h"

#include <sstream>

#include "shareprefill/error.h"

namespace sp_python {
namespace {

namespace dl = nb::dlpack;

bool is_float(dl::dtype t, int bits) {
  return t.code == static_cast<uint8_t>(dl::dtype_code::Float) && t.bits == bits && t.lanes == 1;
}

sp::dtype project_dtype(const char* fn, const char* name, dl::dtype t) {
  if (is_float(t, 32)) return sp::dtype::f32;
  if (is_float(t, 16)) return sp::dtype::f16;
  if (t.code == static_cast<uint8_t>(dl::dtype_code::Bfloat) && t.bits == 16 && t.lanes == 1)
    return sp::dtype::bf16;
  sp::fail(fn, name, " has dtype ", dtype_name(t), "; expected float32, float16 or bfloat16");
}

template <class Array>
array_info view_of(const char* fn, const char* name, const Array& a, int rank) {
  sp::check(a.is_valid(), fn, name, " is not an array");
  sp::check(static_cast<int>(a.ndim()) == rank, fn, name, " must have ", rank, " dimensions, got ",
            a.ndim());
  array_info info;
  const int device = a.device_type();
  if (device == nb::device::cuda::value) {
    info.device = array_device::cuda;
  } else {
    sp::check(device == nb::device::cpu::value, fn, name, " is on DLPack device type ", device,
              "; expected the CPU (1) or a CUDA device (2)");
  }
  info.device_id = a.device_id();
  sp::tensor_view& v = info.view;
  v.data = const_cast<void*>(static_cast<const void*>(a.data()));
  v.type = project_dtype(fn, name, a.dtype());
  v.rank = rank;
  v.on_device = info.device == array_device::cuda;
  for (int i = 0; i < rank; ++i) {
    v.shape[i] = static_cast<int64_t>(a.shape(static_cast<size_t>(i)));
    v.stride[i] = a.stride(static_cast<size_t>(i));
  }
  for (int i = 0; i < rank; ++i)
    sp::check(v.shape[i] > 0, fn, name, " has an empty dimension: shape ", shape_string(v));
  return info;
}

}  // namespace

std::string dtype_name(dl::dtype t) {
  std::ostringstream os;
  if (t.code == static_cast<uint8_t>(dl::dtype_code::Float)) {
    os << "float";
  } else if (t.code == static_cast<uint8_t>(dl::dtype_code::Bfloat)) {
    os << "bfloat";
  } else if (t.code == static_cast<uint8_t>(dl::dtype_code::Int)) {
    os << "int";
  } else if (t.code == static_cast<uint8_t>(dl::dtype_code::UInt)) {
    os << "uint";
  } else if (t.code == static_cast<uint8_t>(dl::dtype_code::Bool)) {
    return "bool";
  } else if (t.code == static_cast<uint8_t>(dl::dtype_code::Complex)) {
    os << "complex";
  } else {
    os << "code" << static_cast<int>(t.code) << "_";
  }
  os << static_cast<int>(t.bits);
  if (t.lanes != 1) os << "x" << t.lanes;
  return os.str();
}

std::string shape_string(const sp::tensor_view& v) {
  std::ostringstream os;
  os << "(";
  for (int i = 0; i < v.rank; ++i) os << (i ? ", " : "") << v.shape[i];
  os << (v.rank == 1 ? ",)" : ")");
  return os.str();
}

array_info view_input(const char* fn, const char* name, const input_array& a, int rank) {
  return view_of(fn, name, a, rank);
}

array_info view_output(const char* fn, const char* name, const output_array& a, int rank) {
  return view_of(fn, name, a, rank);
}

void require_contiguous(const char* fn, const char* name, const array_info& a) {
  if (a.view.is_contiguous()) return;
  std::ostringstream strides;
  for (int i = 0; i < a.view.rank; ++i) strides << (i ? ", " : "") << a.view.stride[i];
  sp::fail(fn, name, " of shape ", shape_string(a.view), " has element strides (", strides.str(),
           "); this call needs a C-contiguous array (numpy.ascontiguousarray(", name, ") or ", name,
           ".contiguous())");
}

void require_f32(const char* fn, const char* name, const array_info& a) {
  const char* names[] = {"float32", "float16", "bfloat16"};  // indexed by sp::dtype
  sp::check(a.view.type == sp::dtype::f32, fn, name, " must be float32, got ",
            names[static_cast<int>(a.view.type)]);
}

void require_same_device(const char* fn, const char* name_a, const array_info& a,
                         const char* name_b, const array_info& b) {
  auto where = [](const array_info& x) {
    return x.device == array_device::cpu ? std::string("cpu") : sp::str("cuda:", x.device_id);
  };
  sp::check(a.device == b.device && (a.device == array_device::cpu || a.device_id == b.device_id),
            fn, name_a, " is on ", where(a), " but ", name_b, " is on ", where(b));
}

}  // namespace sp_python
