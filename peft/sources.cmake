set(PEFT_SOURCES
  ${CMAKE_CURRENT_LIST_DIR}/adapter_dir.cpp
  ${CMAKE_CURRENT_LIST_DIR}/bottleneck.cpp
  ${CMAKE_CURRENT_LIST_DIR}/lora.cpp
  ${CMAKE_CURRENT_LIST_DIR}/method.cpp
  ${CMAKE_CURRENT_LIST_DIR}/peft_format.cpp
  ${CMAKE_CURRENT_LIST_DIR}/prefix.cpp
  ${CMAKE_CURRENT_LIST_DIR}/quantized.cpp)
