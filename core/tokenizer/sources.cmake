# Tokenizers: SentencePiece .model files (read natively: libsentencepiece cannot share a process
# with LibTorch) and HF byte-level BPE. The split patterns need PCRE2, the normalizers ICU.
pkg_check_modules(PCRE2 REQUIRED IMPORTED_TARGET libpcre2-8)
pkg_check_modules(ICU_UC REQUIRED IMPORTED_TARGET icu-uc)
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
list(APPEND CORE_LIBS PkgConfig::PCRE2 PkgConfig::ICU_UC)
