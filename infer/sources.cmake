set(INFER_SOURCES
  ${CMAKE_CURRENT_LIST_DIR}/batch_generate.cpp
  ${CMAKE_CURRENT_LIST_DIR}/engine_profile.cpp
  ${CMAKE_CURRENT_LIST_DIR}/generate.cpp
  ${CMAKE_CURRENT_LIST_DIR}/gguf_runner.cpp
  ${CMAKE_CURRENT_LIST_DIR}/gguf_stage.cpp
  ${CMAKE_CURRENT_LIST_DIR}/infer_devices.cpp
  ${CMAKE_CURRENT_LIST_DIR}/infer_planner.cpp
  ${CMAKE_CURRENT_LIST_DIR}/pipeline.cpp
  ${CMAKE_CURRENT_LIST_DIR}/pipeline_session.cpp
  ${CMAKE_CURRENT_LIST_DIR}/pipeline_shards.cpp
  ${CMAKE_CURRENT_LIST_DIR}/quant_kernels.cpp
  ${CMAKE_CURRENT_LIST_DIR}/sampling.cpp
  ${CMAKE_CURRENT_LIST_DIR}/speculative.cpp)
# x86-64 only: compiled with -mavx2 -mfma -mf16c and chosen at run time (see CMakeLists.txt).
set(INFER_AVX2_SOURCES
  ${CMAKE_CURRENT_LIST_DIR}/quant_kernels_avx2.cpp)
