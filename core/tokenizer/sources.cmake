# Tokenizers: SentencePiece .model files (read natively: libsentencepiece cannot share a process
# with LibTorch) and HF byte-level BPE. The split patterns need PCRE2, the normalizers ICU.
# Found by header and library (not pkg-config) so that unpacked packages on CMAKE_PREFIX_PATH work too.
find_path(PCRE2_INCLUDE_DIR pcre2.h REQUIRED)
find_library(PCRE2_LIBRARY pcre2-8 REQUIRED)
find_path(ICU_INCLUDE_DIR unicode/uchar.h REQUIRED)
find_library(ICU_UC_LIBRARY icuuc REQUIRED)
list(APPEND CORE_SOURCES
  ${CMAKE_CURRENT_LIST_DIR}/added_tokens.cpp
  ${CMAKE_CURRENT_LIST_DIR}/bpe.cpp
  ${CMAKE_CURRENT_LIST_DIR}/byte_level.cpp
  ${CMAKE_CURRENT_LIST_DIR}/hf_tokenizer.cpp
  ${CMAKE_CURRENT_LIST_DIR}/normalizer.cpp
  ${CMAKE_CURRENT_LIST_DIR}/piece_trie.cpp
  ${CMAKE_CURRENT_LIST_DIR}/pre_tokenizer.cpp
  ${CMAKE_CURRENT_LIST_DIR}/regex.cpp
  ${CMAKE_CURRENT_LIST_DIR}/sentencepiece_tokenizer.cpp
  ${CMAKE_CURRENT_LIST_DIR}/sentencepiece_train.cpp
  ${CMAKE_CURRENT_LIST_DIR}/spm_model.cpp
  ${CMAKE_CURRENT_LIST_DIR}/spm_normalizer.cpp
  ${CMAKE_CURRENT_LIST_DIR}/spm_segmenter.cpp
  ${CMAKE_CURRENT_LIST_DIR}/tokenizer.cpp
  ${CMAKE_CURRENT_LIST_DIR}/utf8.cpp)
list(APPEND CORE_LIBS ${PCRE2_LIBRARY} ${ICU_UC_LIBRARY})
list(APPEND CORE_INCLUDES ${PCRE2_INCLUDE_DIR} ${ICU_INCLUDE_DIR})
