set(COMPRESS_SOURCES
  ${CMAKE_CURRENT_LIST_DIR}/gguf.cpp
  ${CMAKE_CURRENT_LIST_DIR}/gguf_quant.cpp
  ${CMAKE_CURRENT_LIST_DIR}/gguf_tensor.cpp
  ${CMAKE_CURRENT_LIST_DIR}/gptq.cpp
  ${CMAKE_CURRENT_LIST_DIR}/prune.cpp
  ${CMAKE_CURRENT_LIST_DIR}/quant_record.cpp
  ${CMAKE_CURRENT_LIST_DIR}/rtn.cpp)
