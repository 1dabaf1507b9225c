// Internal to infer/quant_kernels_avx2.cpp, which includes it twice: once plain (AVX2) and once
// under AVX512-VNNI + VL target options with FEDSPLIT_QUANT_VNNI set, each time in its own
// namespace. No include guard on purpose; it relies on <immintrin.h>, <cstring> and
// quant_kernels_impl.h being included first. The kernels are in quant_gemm_avx2_body.h.
float load_fp16(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, sizeof h);  // little-endian, as GGUF stores it
  return _cvtsh_ss(h);           // exact, as fp16_to_fp32
}
