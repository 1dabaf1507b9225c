set(FEDERATED_SOURCES
  ${CMAKE_CURRENT_LIST_DIR}/server_optimizer.cpp
  ${CMAKE_CURRENT_LIST_DIR}/report.cpp
  ${CMAKE_CURRENT_LIST_DIR}/svg_chart.cpp)
