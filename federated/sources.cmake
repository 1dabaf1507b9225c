set(FEDERATED_SOURCES
  ${CMAKE_CURRENT_LIST_DIR}/lora_aggregation.cpp
  ${CMAKE_CURRENT_LIST_DIR}/server_optimizer.cpp)
